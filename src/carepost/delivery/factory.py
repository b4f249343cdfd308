"""Settings into a transport and a worker: the one place that reads delivery settings."""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path

from carepost.consent.headers import public_base_url
from carepost.delivery import capture
from carepost.delivery.direct import DirectConfig, DirectTransport
from carepost.delivery.mta_sts import PolicySource
from carepost.delivery.mta_sts_fetch import HttpsPolicyFetcher
from carepost.delivery.mta_sts_policies import DatabasePolicyCache, MtaStsPolicies
from carepost.delivery.null import NullTransport
from carepost.delivery.resolver import DnsResolver
from carepost.delivery.route import RouteError, phi_free_classes
from carepost.delivery.smtp import RelayConfig, SmtpTransport
from carepost.delivery.throttle import KNOWN_DOMAINS, DomainLimits, ThrottleConfig
from carepost.delivery.transport import Transport
from carepost.delivery.warmup import DbLedger
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.workspace import Workspace


class DeliveryConfigError(ValueError):
    pass


def capture_folder(ws: Workspace) -> Path:
    return ws.settings.data_dir / "capture"


def transport_for(ws: Workspace) -> Transport:
    s = ws.settings
    if s.transport == "null":
        return NullTransport()
    if s.transport == "capture":
        return SmtpTransport(
            capture.relay_config(
                capture_folder(ws),
                s.capture_port,
                timeout=s.smtp_timeout,
                pool_size=s.smtp_pool_size,
                max_messages_per_connection=s.smtp_messages_per_connection,
                pipeline_messages=s.smtp_pipeline_messages,
            )
        )
    if s.transport == "direct":
        return direct_transport(ws)
    if not s.smtp_host:
        raise DeliveryConfigError("CAREPOST_SMTP_HOST is not set (transport smtp)")
    ctx = ssl.create_default_context(cafile=s.smtp_ca_file or None)
    return SmtpTransport(
        RelayConfig(
            s.smtp_host,
            s.smtp_port,
            tls=s.smtp_tls,
            username=s.smtp_username or None,
            password=s.smtp_password.get_secret_value() or None,
            tls_context=ctx,
            timeout=s.smtp_timeout,
            pool_size=s.smtp_pool_size,
            max_messages_per_connection=s.smtp_messages_per_connection,
            pipeline_messages=s.smtp_pipeline_messages,
        )
    )


def direct_transport(ws: Workspace, *, sts: PolicySource | None = None) -> DirectTransport:
    """Direct delivery with the system's DNS and trust store; warm-up counted in the
    database (shared by every worker), MTA-STS policies fetched over verified HTTPS and
    cached in the database (`sts` replaces that source in tests)."""
    s = ws.settings
    resolver = DnsResolver()
    if sts is None:
        sts = MtaStsPolicies(resolver, HttpsPolicyFetcher(), cache=DatabasePolicyCache(ws.engine))
    default = DomainLimits(max_connections=s.direct_max_connections, per_minute=s.direct_per_minute)
    domains = dict(KNOWN_DOMAINS)
    for name, limits in s.direct_domain_limits.items():
        domains[name.lower()] = DomainLimits(
            max_connections=limits.max_connections, per_minute=limits.per_minute
        )
    throttle = ThrottleConfig(
        default=default,
        domains=domains,
        warmup_schedule=tuple(s.direct_warmup_schedule),
        warmup_start=s.direct_warmup_start,
    )
    config = DirectConfig(
        ehlo_name=s.direct_ehlo_name or None,
        timeout=s.direct_timeout,
        mx_cache_seconds=s.direct_mx_cache_seconds,
        tls_overrides={k.lower(): v for k, v in s.direct_tls_overrides.items()},
        throttle=throttle,
    )
    return DirectTransport(resolver, sts, config, ledger=DbLedger(ws.engine))


def worker_for(ws: Workspace, *, name: str | None = None) -> Worker:
    s = ws.settings
    try:
        phi_free = phi_free_classes(s.phi_free_classes)
    except RouteError as exc:
        raise DeliveryConfigError(str(exc)) from None
    config = WorkerConfig(
        batch_size=s.worker_batch_size,
        concurrency=s.worker_concurrency,
        lease=timedelta(minutes=s.worker_lease_minutes),
        public_url=public_base_url(s),
        phi_free_classes=phi_free,
    )
    return Worker(ws.engine, ws.keyring, transport_for(ws), config, name=name)
