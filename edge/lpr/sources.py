"""Builds the lane's plate source from ``[camera]``/``[lpr]``: the push listener or on-box LPR.

Why here and not in ``edge.barrier.factory``: drivers must not import ``lpr`` (the import arrows
are app → lane → {barrier, lpr}); the push listener's trust settings (allowlist, credentials,
caps) are an LPR concern. ``edge.app`` calls ``build_plate_source``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, tzinfo

from edge.config import Config, SecretError, parse_host_port
from edge.config.models import CameraConfig
from edge.lpr.camera_push import CameraPushSource
from edge.lpr.push_trust import Allowlist, PushAuth, parse_allow
from edge.lpr.source import PlateSource


def push_allowlist(cam: CameraConfig) -> Allowlist:
    """``camera.allow_from`` if set (``[]`` = nobody), else ``camera.address``, else nobody."""
    if cam.allow_from is not None:
        return Allowlist(parse_allow(cam.allow_from))
    return Allowlist(parse_allow([cam.address] if cam.address else []))


def push_auth(cam: CameraConfig) -> PushAuth:
    """The credentials the camera must send; the password is read from its secret now, so a
    missing or too-open file stops the start with its reason."""
    if cam.auth == "none":
        return PushAuth("none")
    assert cam.password is not None  # the config model requires it with auth
    try:
        password = cam.password.get()
    except SecretError as exc:  # the start stops here, naming the key (never the value)
        raise SecretError(f"camera.password: {exc}") from None
    from edge.logs import add_sensitive

    add_sensitive(password)
    return PushAuth(cam.auth, cam.username, password)


def build_push_source(cfg: Config) -> CameraPushSource:
    cam = cfg.camera
    host, port = parse_host_port(cam.listen)
    return CameraPushSource(
        host,
        port,
        cfg.lane.id,
        min_confidence=cam.min_confidence,
        tz=cfg.lane.tz,
        allow=push_allowlist(cam),
        auth=push_auth(cam),
        max_connections=cam.max_connections,
        max_body_bytes=cam.max_body_bytes,
        header_timeout_s=cam.header_timeout_s,
        body_timeout_s=cam.body_timeout_s,
    )


def build_plate_source(
    cfg: Config, tz: tzinfo, now: Callable[[], datetime] | None = None
) -> PlateSource:
    """The push listener when ``[camera] source = "push"``, else on-box recognition."""
    if cfg.camera.source == "push":
        return build_push_source(cfg)
    from edge.lpr.grammar import grammar_by_name
    from edge.lpr.onbox_source import OnBoxPlateSource  # imports OpenCV: only when needed

    return OnBoxPlateSource(
        cfg.camera.url,
        cfg.lane.id,
        grammar=grammar_by_name(cfg.lpr.grammar),
        vote_frames=cfg.lpr.vote_frames,
        early_frames=cfg.lpr.early_frames,
        early_confidence=cfg.lpr.early_confidence,
        min_confidence=cfg.camera.min_confidence,
        # an uncertain read must reach the lane before its own plate timer gives up
        timeout_s=0.8 * cfg.lane.plate_timeout_s,
        tz=tz,
        now=now,
        crops_dir=cfg.lpr.crops_dir if cfg.lpr.keep_crops_days > 0 else None,
        keep_frames=cfg.lpr.keep_frames,
    )
