"""Test fixtures for secured brokers: a throwaway certificate authority and a SASL_SSL-only Kafka node.

Only the security tests use these; a real deployment uses certificates from its own CA and its own
broker configuration (docs/security.md).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from churnstream.errors import InfraError
from churnstream.local_infra import KafkaNode, _require, _write_private


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a private certificate authority and of one server certificate it signed."""

    ca: Path  # the CA certificate: what clients trust (``ssl.ca.location``)
    keystore: Path  # the server's private key and certificate chain, in one PEM file
    key: Path  # the server's private key alone
    certificate: Path  # the server's certificate alone


def make_tls_files(
    directory: Path, *, hosts: Iterable[str] = ("127.0.0.1", "localhost"), days: int = 2
) -> TlsFiles:
    """A throwaway CA and a server certificate for ``hosts`` (IP or DNS names), made with ``openssl``.

    For local brokers in tests and experiments; a real deployment uses certificates from its own CA.
    """
    openssl = _require("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    ca_key, ca, key = directory / "ca.key", directory / "ca.pem", directory / "server.key"
    csr, cert, ext = directory / "server.csr", directory / "server.pem", directory / "server.ext"
    ext.write_text(
        f"subjectAltName={names}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", str(days)]
        + ["-subj", "/CN=churnstream local CA", "-addext", "basicConstraints=critical,CA:TRUE"]
        + ["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={next(iter(hosts))}"],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial"]
        + ["-out", str(cert), "-days", str(days), "-extfile", str(ext)],
    ]
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise InfraError(
                f"openssl failed ({' '.join(argv[1:3])}):\n{(proc.stdout + proc.stderr)[-2000:]}"
            )
    for private in (ca_key, key):
        private.chmod(0o600)
    keystore = directory / "server-keystore.pem"
    _write_private(keystore, key.read_text() + cert.read_text() + ca.read_text())
    return TlsFiles(ca=ca, keystore=keystore, key=key, certificate=cert)


def sasl_ssl_node(
    data_dir: Path,
    *,
    port: int,
    tls: TlsFiles,
    users: Mapping[str, str],
    controller_port: int | None = None,
    mechanism: str = "SCRAM-SHA-512",
    heap: str = "512m",
) -> KafkaNode:
    """A local broker whose only client listener is SASL_SSL: TLS with ``tls``'s PEM files, SCRAM users
    ``users`` (name -> password) created when the storage is formatted.

    The first user is the broker's own (inter-broker) identity and the one :func:`kafka_answers` logs in
    with. The controller listener stays plaintext on ``host``: the node talks to itself there.
    """
    if mechanism not in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise InfraError(f"sasl_ssl_node supports SCRAM-SHA-256 and SCRAM-SHA-512, not {mechanism}")
    if not users:
        raise InfraError("sasl_ssl_node needs at least one SCRAM user")
    admin, admin_password = next(iter(users.items()))
    host = "127.0.0.1"
    node = KafkaNode(data_dir=data_dir, host=host, port=port, controller_port=controller_port)
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{admin}" password="{admin_password}";'
    )
    server = {
        "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{node.controller}",
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": mechanism,
        "sasl.mechanism.inter.broker.protocol": mechanism,
        f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca),
        "ssl.client.auth": "none",
    }
    client = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": mechanism,
        "sasl.username": admin,
        "sasl.password": admin_password,
        "ssl.ca.location": str(tls.ca),
    }
    return KafkaNode(
        data_dir=data_dir,
        host=host,
        port=port,
        controller_port=controller_port,
        server_properties=server,
        client_config=client,
        heap=heap,
        scram_users=dict(users),
        scram_mechanism=mechanism,
    )
