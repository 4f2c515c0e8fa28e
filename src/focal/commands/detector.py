"""`focal detector serve`: the face detector as a network service that every focal instance
shares (``detector_url``), on Ray Serve (the ``service`` extra; docs/scaling.md).

Settings are ``focal serve``'s (same table, environment and config file): the detector_* ones
choose the detector each replica builds, the detector_service_* ones the deployment. With no
``--address`` it starts a Ray of its own on this machine and stops it on exit; with one, it
deploys on that cluster and removes its application on exit.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from focal.errors import FocalError, ModelMissingError, SettingsError
from focal.server.settings import Settings, add_arguments, load

STARTED = "focal detector service on"  # the first line printed once it answers


def register(sub: Any) -> None:
    p = sub.add_parser("detector", help="the face detector as a shared network service")
    actions = p.add_subparsers(dest="detector_command", required=True)
    s = actions.add_parser(
        "serve",
        help="serve face detection to every focal instance (Ray Serve)",
        description="Deploy focal's face detector as a Ray Serve application answering the Open "
        "Inference Protocol at http://<detector_service_host>:<detector_service_port>; point "
        "focal serve's detector_url at it. Settings as for focal serve (docs/configuration.md).",
    )
    add_arguments(s)
    s.add_argument(
        "--address",
        dest="detector_service_address",
        default=argparse.SUPPRESS,
        help="Ray cluster to deploy on (same as --detector-service-address).",
    )
    s.set_defaults(func=run)


def service_config(settings: Settings) -> Any:
    """The deployment's ServiceConfig; SettingsError for settings that cannot deploy."""
    from focal.server.detection.start import detector_config
    from focal.server.detector_service import ServiceConfig

    low, high = settings.detector_service_min_replicas, settings.detector_service_max_replicas
    if high < 1 or low > high:
        raise SettingsError(
            "Expected detector_service_max_replicas at least 1 and at least "
            f"detector_service_min_replicas but received {high} (min {low})"
        )
    if settings.detector_service_max_batch < 1:
        raise SettingsError(
            "Expected at least 1 for detector_service_max_batch but received "
            f"{settings.detector_service_max_batch}"
        )
    if settings.detector_service_queue < 0:
        raise SettingsError(
            "Expected at least 0 for detector_service_queue but received "
            f"{settings.detector_service_queue}"
        )
    return ServiceConfig(
        factory_args=detector_config(settings).factory_args(),
        max_batch=settings.detector_service_max_batch,
        batch_wait_s=settings.detector_service_batch_wait_ms / 1000,
        min_replicas=low,
        max_replicas=high,
        idle_s=settings.detector_service_idle_s,
        target_requests=max(settings.detector_service_target_requests, 0.1),
        replica_cpus=settings.detector_service_replica_cpus,
        replica_gpus=settings.detector_service_replica_gpus,
        queue=settings.detector_service_queue,
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(config=args.config, args=args)
        import ray  # noqa: F401  (the service extra)
        from ray import serve  # noqa: F401
    except FocalError as error:
        print(f"focal detector serve: {error.public}", file=sys.stderr)
        return 2
    except ImportError:
        print(
            "focal detector serve: needs Ray Serve: pip install 'focal-images[service]'",
            file=sys.stderr,
        )
        return 2
    try:
        config = service_config(settings)
        if not settings.detector_service_address:
            _check_model_here(settings)
    except FocalError as error:
        print(f"focal detector serve: {error.public}", file=sys.stderr)
        return 3 if isinstance(error, ModelMissingError) else 2
    return _serve(settings, config)


def _check_model_here(settings: Settings) -> None:
    """A local service's replicas load the model here: say so now rather than in Ray's logs."""
    if settings.detector_runtime != "torch":
        from focal.face import models

        models.require()


def _serve(settings: Settings, config: Any) -> int:
    import ray
    from ray import serve

    from focal.server.detector_service import APP_NAME, application

    stop = threading.Event()
    local = not settings.detector_service_address
    ray.init(
        address="local" if local else settings.detector_service_address,
        include_dashboard=False,
        ignore_reinit_error=True,
        log_to_driver=False,
        logging_level=logging_level(settings),
    )
    for signum in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which sets its own
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(
            http_options={
                "host": settings.detector_service_host,
                "port": settings.detector_service_port,
            }
        )
        serve.run(application(config), name=APP_NAME, route_prefix="/", blocking=False)
        url = f"http://{settings.detector_service_host}:{settings.detector_service_port}"
        print(
            f"{STARTED} {url} (replicas {config.min_replicas} to {config.max_replicas}, "
            f"batches of up to {config.max_batch}); set detector_url = {url!r}",
            flush=True,
        )
        stop.wait()
    finally:
        _shut_down(local, APP_NAME)
    return 0


def _shut_down(local: bool, app_name: str) -> None:
    import ray
    from ray import serve

    try:
        if local:
            serve.shutdown()  # type: ignore[no-untyped-call]
        else:
            serve.delete(app_name)
    finally:
        ray.shutdown()


def logging_level(settings: Settings) -> int:
    import logging

    level: int = getattr(logging, settings.log_level.upper(), logging.INFO)
    return level
