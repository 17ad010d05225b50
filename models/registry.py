"""The model registry: immutable versions on disk, a ``current`` pointer, promotion history, integrity checks.

Layout of a registry root::

    root/
      current              one line: the current version (replaced atomically by rename)
      shadow               one line: the version in shadow, scored beside the current one (absent: none)
      evidence.json        the latest champion-vs-shadow evidence (churnstream.monitoring.evidence)
      history.json         versions that were current before, newest last (for rollback), and a log
      v0001/
        model.pkl          the pickled BatchModel
        model.sha256       sha256 of model.pkl (also in metadata.json)
        metadata.json      version, created_at, features, training window, metrics, thresholds, ...
        reference.parquet  reference sample (features + churn_probability) for drift monitoring (.csv
                           when pyarrow is missing)
        MODEL_CARD.md      what the model is, how it was trained and evaluated, its limits

A version is written into a hidden temporary directory and renamed into place, so a reader never sees a
half-written version; ``model.pkl`` is hashed before it is unpickled, so a tampered or truncated
artifact raises :class:`ModelIntegrityError` instead of running its bytes.

>>> import tempfile
>>> reg = ModelRegistry(tempfile.mkdtemp())
>>> reg.current_version() is None, reg.versions()
(True, [])
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pickle
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from churnstream.errors import ModelError, ModelIntegrityError, ModelNotFoundError, UsageError
from churnstream.models.batch import BatchModel

MODEL_FILE = "model.pkl"
HASH_FILE = "model.sha256"
METADATA_FILE = "metadata.json"
CARD_FILE = "MODEL_CARD.md"
CURRENT_FILE = "current"
SHADOW_FILE = "shadow"
EVIDENCE_FILE = "evidence.json"
HISTORY_FILE = "history.json"
_VERSION_RE = re.compile(r"^v(\d{4,})$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(slots=True)
class LoadedModel:
    """A verified, unpickled model version with its metadata; ``reference`` is read on first use."""

    version: str
    model: BatchModel
    metadata: dict[str, Any]
    path: Path
    _reference: Any = field(default=None, repr=False)

    @property
    def reference(self) -> Any:
        """The reference sample as a pandas DataFrame (feature columns + ``churn_probability``)."""
        if self._reference is None:
            self._reference = read_reference(self.path)
        return self._reference


def read_reference(version_dir: Path) -> Any:
    import pandas as pd

    parquet, csv = version_dir / "reference.parquet", version_dir / "reference.csv"
    if parquet.exists():
        return pd.read_parquet(parquet)
    if csv.exists():
        return pd.read_csv(csv)
    return pd.DataFrame()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ModelRegistry:
    """Model versions under ``root``; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- reading (cheap, lock-free) -------------------------------------------------------------

    def current_version(self) -> str | None:
        """The current version's name, or None; reads one small file, so a scorer may poll it often."""
        try:
            text = (self.root / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def shadow_version(self) -> str | None:
        """The version in shadow (scored beside the current one, deciding nothing), or None."""
        try:
            text = (self.root / SHADOW_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def evidence(self) -> dict[str, Any] | None:
        """The latest recorded champion-vs-shadow evidence (see :meth:`record_evidence`), or None."""
        try:
            found = json.loads((self.root / EVIDENCE_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def log(self) -> list[dict[str, Any]]:
        """The registry's log of promotions, rollbacks and shadow changes, oldest first."""
        return list(self._read_history()["log"])

    def versions(self) -> list[str]:
        """Every complete version, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def metadata(self, version: str) -> dict[str, Any]:
        path = self._version_dir(version) / METADATA_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelNotFoundError(
                f"model version {version} has no {METADATA_FILE} in {path.parent}"
            ) from None
        except ValueError as exc:
            raise ModelIntegrityError(f"{path} is not valid JSON: {exc}") from None

    def verify(self, version: str) -> bytes:
        """The bytes of ``version``'s artifact after checking their sha256, without unpickling them."""
        vdir = self._version_dir(version)
        expected = self.metadata(version).get("sha256")
        try:
            data = (vdir / MODEL_FILE).read_bytes()
        except FileNotFoundError:
            raise ModelIntegrityError(f"model version {version} has no {MODEL_FILE}") from None
        if not isinstance(expected, str) or len(expected) != 64:
            raise ModelIntegrityError(f"model version {version}: metadata has no sha256 of {MODEL_FILE}")
        sidecar = vdir / HASH_FILE
        if sidecar.exists() and sidecar.read_text(encoding="utf-8").split()[0] != expected:
            raise ModelIntegrityError(f"model version {version}: {HASH_FILE} disagrees with {METADATA_FILE}")
        actual = sha256_hex(data)
        if actual != expected:
            raise ModelIntegrityError(
                f"model version {version}: {MODEL_FILE} has sha256 {actual[:12]}..., "
                f"expected {expected[:12]}... "
                "(the artifact was modified or truncated after registration; refusing to load it)"
            )
        return data

    def stamp(self, version: str) -> tuple[tuple[str, int, int], ...]:
        """What changes when ``version``'s files are written again (names, sizes, modification times): a
        version refused as unloadable is tried again once it changes."""
        try:
            files = sorted(p for p in self._version_dir(version).iterdir() if p.is_file())
            return tuple((p.name, (st := p.stat()).st_size, st.st_mtime_ns) for p in files)
        except (OSError, ModelError):
            return ()

    def load(self, version: str | None = None) -> LoadedModel:
        """Verify and unpickle ``version`` (default: the current one)."""
        if version is None:
            version = self.current_version()
            if version is None:
                raise ModelNotFoundError(self._no_current_message())
        data = self.verify(version)
        try:
            model = pickle.loads(data)
        except Exception as exc:  # a class or module this release does not have: version skew
            raise ModelIntegrityError(
                f"model version {version}: {MODEL_FILE} cannot be loaded by this release of churnstream "
                f"({type(exc).__name__}: {exc}); was it trained by another release? Retrain it with this "
                "one, or make a loadable version current (`churnstream models rollback`)"
            ) from exc
        if not isinstance(model, BatchModel):
            raise ModelIntegrityError(f"model version {version}: {MODEL_FILE} holds a {type(model).__name__}")
        return LoadedModel(
            version=version, model=model, metadata=self.metadata(version), path=self._version_dir(version)
        )

    def history(self) -> list[str]:
        """Versions that were current before the current one, oldest first (rollback pops the last)."""
        return list(self._read_history()["stack"])

    # -- writing (serialised by a lock file) ----------------------------------------------------

    def register(
        self,
        model: BatchModel,
        metadata: dict[str, Any],
        *,
        reference: Any = None,
        model_card: str = "",
        promote: bool = False,
    ) -> str:
        """Write a new version (atomically, by rename) and return its name; promote it when asked."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            data = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
            digest = sha256_hex(data)
            _write_file(tmp / MODEL_FILE, data)
            _write_file(tmp / HASH_FILE, f"{digest}  {MODEL_FILE}\n".encode())
            if reference is not None and len(reference):
                _write_reference(tmp, reference)
            with self._lock():
                version = self._next_version()
                meta = dict(metadata)
                meta.update(
                    version=version,
                    created_at=meta.get("created_at") or _now_iso(),
                    sha256=digest,
                    artifact=MODEL_FILE,
                    feature_names=list(model.feature_names),
                )
                _write_file(tmp / METADATA_FILE, json.dumps(meta, indent=2, default=_json_default).encode())
                card = (
                    model_card.replace("{version}", version) if model_card else _default_card(version, meta)
                )
                _write_file(tmp / CARD_FILE, card.encode())
                os.rename(tmp, self.root / version)
                _fsync_dir(self.root)
                if promote:
                    self._set_current(version, action="promote")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return version

    def servable(self, version: str) -> LoadedModel:
        """``version`` loaded, once it is known that workers can serve it: its artifact verified and
        unpickled by this release (:meth:`load`), and every feature it reads one that churnstream computes
        (a model of another release reading a feature this one lacks would score with NaN in its place).
        :class:`ModelIntegrityError` otherwise: checked before a version is made current, put in shadow or
        rolled back to, since every worker started afterwards loads it or fails to start."""
        from churnstream.features.definitions import FEATURE_NAMES

        loaded = self.load(version)
        unknown = [name for name in loaded.model.feature_names if name not in FEATURE_NAMES]
        if unknown:
            raise ModelIntegrityError(
                f"model version {version} reads features this release of churnstream does not compute: "
                f"{', '.join(unknown)}; retrain it with this release"
            )
        return loaded

    def promote(self, version: str) -> None:
        """Make ``version`` current (once it is :meth:`servable`); the previous one is kept for rollback.
        Promoting the version in shadow empties the shadow slot (it would shadow itself)."""
        self.servable(version)
        with self._lock():
            self._set_current(version, action="promote")
            if self.shadow_version() == version:
                self._set_shadow(None, reason="promoted")

    def shadow(self, version: str | None, *, reason: str | None = None) -> None:
        """Put ``version`` in shadow (once it is :meth:`servable`), or empty the slot with None; logged in
        the history like a promotion. Workers score every prediction with it beside the current model."""
        if version is not None:
            self.servable(version)
        with self._lock():
            self._set_shadow(version, reason=reason)

    def record_evidence(self, evidence: dict[str, Any]) -> None:
        """Keep the latest champion-vs-shadow evidence (``models list`` shows it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(
            self.root / EVIDENCE_FILE, json.dumps(evidence, indent=1, default=_json_default).encode()
        )

    def rollback(self) -> str:
        """Make the previously current version current again and return it. When it was in shadow (as a
        model demoted by auto-promotion is), the shadow slot is emptied, as a promotion empties it."""
        with self._lock():
            hist = self._read_history()
            stack: list[str] = hist["stack"]
            while stack:
                candidate = stack.pop()
                if candidate in self.versions() and candidate != self.current_version():
                    self.servable(candidate)
                    self._set_current(candidate, action="rollback", history=hist)
                    if self.shadow_version() == candidate:
                        self._set_shadow(None, reason="rolled back to")
                    return candidate
            raise ModelNotFoundError(f"nothing to roll back to in {self.root}: no earlier current version")

    # -- internals -------------------------------------------------------------------------------

    def _version_dir(self, version: str) -> Path:
        if not _VERSION_RE.match(version or ""):
            raise ModelNotFoundError(f"{version!r} is not a model version name (like v0001)")
        vdir = self.root / version
        if not vdir.is_dir():
            known = ", ".join(self.versions()[-5:]) or "none"
            raise ModelNotFoundError(f"no model version {version} in {self.root} (latest: {known})")
        return vdir

    def _no_current_message(self) -> str:
        if not self.root.exists():
            return (
                f"no model registry at {self.root}: train a model first with "
                f"`churnstream train --events DIR --out {self.root}` (or set CHURN_MODEL_DIR)"
            )
        if self.versions():
            return (
                f"no current model in {self.root}: promote one with "
                f"`churnstream models --dir {self.root} promote {self.versions()[-1]}`"
            )
        return (
            f"no model versions in {self.root}: train one with "
            f"`churnstream train --events DIR --out {self.root}`"
        )

    def _next_version(self) -> str:
        existing = [int(v[1:]) for v in self.versions()]
        return f"v{(max(existing) + 1) if existing else 1:04d}"

    def _read_history(self) -> dict[str, Any]:
        try:
            hist = json.loads((self.root / HISTORY_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            hist = {}
        hist.setdefault("stack", [])
        hist.setdefault("log", [])
        return hist

    def _set_current(self, version: str, *, action: str, history: dict[str, Any] | None = None) -> None:
        hist = history if history is not None else self._read_history()
        previous = self.current_version()
        if action == "promote" and previous is not None and previous != version:
            hist["stack"].append(previous)
        hist["log"].append({"at": _now_iso(), "action": action, "version": version, "previous": previous})
        hist["log"] = hist["log"][-200:]
        # History first: if we die between the two writes, rollback still knows the old version.
        _atomic_write(self.root / HISTORY_FILE, json.dumps(hist, indent=1).encode())
        _atomic_write(self.root / CURRENT_FILE, f"{version}\n".encode())

    def _set_shadow(self, version: str | None, *, reason: str | None = None) -> None:
        hist = self._read_history()
        previous = self.shadow_version()
        entry: dict[str, Any] = {
            "at": _now_iso(),
            "action": "shadow",
            "version": version,
            "previous": previous,
        }
        if reason:
            entry["reason"] = reason
        hist["log"].append(entry)
        hist["log"] = hist["log"][-200:]
        _atomic_write(self.root / HISTORY_FILE, json.dumps(hist, indent=1).encode())
        if version is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.root / SHADOW_FILE)
        else:
            _atomic_write(self.root / SHADOW_FILE, f"{version}\n".encode())

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_reference(directory: Path, reference: Any) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        reference.to_csv(directory / "reference.csv", index=False)
        return
    reference.to_parquet(directory / "reference.parquet", index=False)


def _now_iso() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _default_card(version: str, meta: dict[str, Any]) -> str:
    return f"# Churn model {version}\n\nCreated {meta.get('created_at')}. See metadata.json.\n"


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def evidence_text(evidence: dict[str, Any]) -> str:
    """A few lines for people: the champion-vs-shadow evidence as :mod:`churnstream.monitoring.evidence`
    computes it (its ``cumulative`` part)."""
    cum = evidence.get("cumulative") or {}
    lines = [
        f"evidence: shadow {evidence.get('shadow_version')} vs champion {evidence.get('champion_version')} "
        f"on {cum.get('labels', 0)} labels ({cum.get('positives', 0)} churned): "
        f"verdict {cum.get('verdict', '-')}"
    ]
    for metric in ("roc_auc", "pr_auc", "alert_value"):
        m = cum.get(metric) or {}
        low, high = m.get("interval") or (None, None)
        lines.append(
            f"  {metric:<12} champion {_fmt(m.get('champion'))}  shadow {_fmt(m.get('shadow'))}  "
            f"difference {_fmt(m.get('difference'))} [{_fmt(low)}, {_fmt(high)}]"
        )
    return "\n".join(lines)


def cli(args: Any, settings: Any) -> int:
    """``churnstream models [--dir D] list | show [VERSION] | promote VERSION | rollback | shadow VERSION``
    (``shadow --clear`` empties the shadow slot)."""
    registry = ModelRegistry(args.model_dir or settings.model_dir)
    action = args.action
    out = sys.stdout
    if action == "list":
        current = registry.current_version()
        shadow = registry.shadow_version()
        versions = registry.versions()
        if not versions:
            print(f"no model versions in {registry.root}", file=out)
            return 0
        print(f"champion: {current or '-'}   shadow: {shadow or '-'}   (* champion, s shadow)", file=out)
        print(
            f"{'':2}{'version':<8} {'created_at':<21} {'model':<24} {'PR-AUC':>7} {'ROC-AUC':>7} {'ECE':>6}",
            file=out,
        )
        for v in versions:
            try:
                meta = registry.metadata(v)
            except ModelError as exc:
                print(f"  {v:<8} unreadable: {exc}", file=out)
                continue
            m = meta.get("metrics", {}).get("chosen", {})
            mark = "*" if v == current else "s" if v == shadow else " "
            print(
                f"{mark} {v:<8} {meta.get('created_at', ''):<21} {meta.get('chosen', ''):<24} "
                f"{_fmt(m.get('pr_auc')):>7} {_fmt(m.get('roc_auc')):>7} {_fmt(m.get('ece')):>6}",
                file=out,
            )
        evidence = registry.evidence()
        if shadow is not None and evidence is not None and evidence.get("shadow_version") == shadow:
            print(evidence_text(evidence), file=out)
        return 0
    if action == "shadow":
        if getattr(args, "clear", False):
            if args.version:
                raise UsageError("models shadow takes a VERSION or --clear, not both")
            registry.shadow(None, reason="cleared")
            print("no model in shadow", file=out)
            return 0
        if not args.version:
            raise UsageError("models shadow needs a VERSION (or --clear; see `churnstream models list`)")
        if args.version == registry.current_version():
            raise ModelError(f"{args.version} is the current model: shadow another version")
        registry.shadow(args.version)
        print(
            f"{args.version} is now in shadow beside {registry.current_version() or 'no current model'}",
            file=out,
        )
        return 0
    if action == "show":
        version = args.version or registry.current_version()
        if version is None:
            raise ModelNotFoundError(registry._no_current_message())
        meta = registry.metadata(version)
        registry.verify(version)
        meta["current"] = version == registry.current_version()
        print(json.dumps(meta, indent=2), file=out)
        return 0
    if action == "promote":
        if not args.version:
            raise UsageError("models promote needs a VERSION (see `churnstream models list`)")
        registry.promote(args.version)
        print(f"current model is now {args.version}", file=out)
        return 0
    if action == "rollback":
        left = registry.current_version()
        evidence = registry.evidence()
        version = registry.rollback()
        print(f"rolled back: current model is now {version}", file=out)
        if evidence and {evidence.get("shadow_version"), evidence.get("champion_version")} == {left, version}:
            cumulative = evidence.get("cumulative") or {}
            print(  # a rollback is the operator's call, so it is said, not refused as promote refuses
                f"note: the evidence last recorded compared {evidence.get('shadow_version')} (in shadow) "
                f"with {evidence.get('champion_version')}: {cumulative.get('verdict')} on "
                f"{cumulative.get('labels')} labels (churnstream models show, or the monitor's pages)",
                file=out,
            )
        return 0
    raise ModelError(f"unknown models action {action!r}")
