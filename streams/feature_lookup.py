"""``churnstream features CUSTOMER_ID [--as-of T]``: a customer's online features as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

from churnstream.errors import ChurnstreamError, StoreError
from churnstream.events import format_time, parse_time
from churnstream.settings import Settings


def cli(args: Any, settings: Settings) -> int:
    import redis

    from churnstream.features.redis_store import RedisFeatureStore, redis_client

    client = redis_client(settings.redis_url)
    store = RedisFeatureStore(
        client=client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        store.check_layout()  # knows how many partitions the state was written for
        as_of = None
        if args.as_of is not None:
            raw = args.as_of
            as_of = parse_time(int(raw) if raw.lstrip("-").isdigit() else raw, "--as-of")
        t = store.watermark() if as_of is None else as_of
        if t is None:
            raise ChurnstreamError("the service has seen no events yet (is the scorer running?)")
        features = store.features(args.customer_id, as_of=t)
        if features is None:
            print(f"churnstream features: unknown customer {args.customer_id!r}", file=sys.stderr)
            return 1
        out = {"customer_id": args.customer_id, "as_of": format_time(t), "features": features}
        print(json.dumps(out, indent=2))
        return 0
    except (redis.RedisError, StoreError) as exc:
        raise ChurnstreamError(f"Redis at {settings.redacted_redis_url}: {exc}") from exc
    finally:
        store.close()
        client.close()
