"""``parkedge-sim``: run simulated lanes for a bench, the demo or tests in another process.

``serve`` prints ONE JSON line with every port, pty path and URL (so a parent process can read
it), then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from parkedge_sim.bench_page import BenchPage
from parkedge_sim.control_api import ControlApi
from parkedge_sim.lane_sim import LaneSim, SiteSim

app = typer.Typer(add_completion=False, help="parkedge hardware simulator (loopback only).")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _split_host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter(f"{what} {text!r} must be host:port")
    if host not in LOOPBACK:
        raise typer.BadParameter(f"{what} {text!r}: the simulator binds loopback only")
    return host, int(port)


def _targets(values: list[str], lanes: list[str]) -> dict[str, str]:
    targets: dict[str, str] = {}
    for item in values:
        lane, sep, url = item.partition("=")
        if not sep or lane not in lanes:
            raise typer.BadParameter(
                f"--lane-target {item!r} must be LANE=http://127.0.0.1:PORT with LANE in {lanes}"
            )
        targets[lane] = url
    return targets


LanesOpt = Annotated[str, typer.Option(help="Comma-separated lane ids.")]
BasePortOpt = Annotated[
    int, typer.Option(help="Modbus port of the first lane (+1 per lane); 0 = any free port.")
]
FramingOpt = Annotated[str, typer.Option(help='Modbus framing: "tcp" or "rtu" (socket://).')]
ControlOpt = Annotated[str, typer.Option(help="host:port of the JSON control API.")]
TargetOpt = Annotated[
    list[str] | None, typer.Option(help="LANE=URL the lane's camera posts plates to (repeatable).")
]
DisplayOpt = Annotated[bool, typer.Option(help="Simulate the LED board on a pty.")]
BarrierOpt = Annotated[str, typer.Option(
    help='"modbus" (relay module + loop inputs) or "eb" (EB RS-485 controller on a pty).')]
VideoOpt = Annotated[bool, typer.Option(
    help="Give each lane a plain IP camera streaming MJPEG (for on-box recognition).")]
CodecOpt = Annotated[str, typer.Option(help='"a0" or "a5".')]
RiseOpt = Annotated[float, typer.Option(help="Arm rise time.")]
FallOpt = Annotated[float, typer.Option(help="Arm fall time.")]
HoldOpt = Annotated[float, typer.Option(help="Auto-close delay after the loop clears.")]
SocketOpt = Annotated[
    list[str] | None,
    typer.Option(help="LANE=PATH: the lane daemon's control socket, shown on the bench page."),
]
LedgerOpt = Annotated[
    Path | None, typer.Option(help="The lanes' ledger file; the bench page shows its tail.")
]


@app.command()
def serve(
    lanes: LanesOpt = "entry,exit",
    base_port: BasePortOpt = 0,
    framing: FramingOpt = "tcp",
    control: ControlOpt = "127.0.0.1:0",
    lane_target: TargetOpt = None,
    display: DisplayOpt = True,
    video: VideoOpt = False,
    barrier: BarrierOpt = "modbus",
    display_codec: CodecOpt = "a0",
    rise_s: RiseOpt = 1.0,
    fall_s: FallOpt = 1.0,
    hold_s: HoldOpt = 1.0,
    bench_page: Annotated[
        str | None, typer.Option(help="host:port to serve the bench page on as well.")
    ] = None,
    lane_socket: SocketOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Serve simulated lanes until SIGTERM."""
    site = _site(lanes, base_port, framing, lane_target, display, display_codec, rise_s, fall_s,
                 hold_s, video, barrier)
    host, port = _split_host_port(control, "--control")
    page = _page(site, bench_page, lane_socket, ledger) if bench_page else None
    asyncio.run(_serve(site, ControlApi(site, host, port), page))


@app.command()
def bench(
    page: Annotated[str, typer.Option(help="host:port of the bench page.")] = "127.0.0.1:8091",
    lanes: LanesOpt = "entry,exit",
    base_port: BasePortOpt = 0,
    framing: FramingOpt = "tcp",
    control: ControlOpt = "127.0.0.1:0",
    lane_target: TargetOpt = None,
    display: DisplayOpt = True,
    video: VideoOpt = False,
    barrier: BarrierOpt = "modbus",
    display_codec: CodecOpt = "a0",
    rise_s: RiseOpt = 1.0,
    fall_s: FallOpt = 1.0,
    hold_s: HoldOpt = 1.0,
    lane_socket: SocketOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Serve simulated lanes AND the bench web page (what `serve --bench-page` does)."""
    serve(lanes, base_port, framing, control, lane_target, display, video, barrier,
          display_codec, rise_s, fall_s, hold_s, page, lane_socket, ledger)


def _site(
    lanes: str,
    base_port: int,
    framing: str,
    lane_target: list[str] | None,
    display: bool,
    display_codec: str,
    rise_s: float,
    fall_s: float,
    hold_s: float,
    video: bool = False,
    barrier: str = "modbus",
) -> SiteSim:
    ids = [lane.strip() for lane in lanes.split(",") if lane.strip()]
    if not ids or len(set(ids)) != len(ids):
        raise typer.BadParameter(f"--lanes {lanes!r} must name distinct lanes")
    if barrier not in ("modbus", "eb"):
        raise typer.BadParameter(f"--barrier {barrier!r} must be modbus or eb")
    if framing not in ("tcp", "rtu"):
        raise typer.BadParameter(f"--framing {framing!r} must be tcp or rtu")
    targets = _targets(lane_target or [], ids)
    return SiteSim(
        {
            lane_id: LaneSim(
                lane_id,
                camera_target=targets.get(lane_id),
                modbus_framing=framing,
                modbus_port=base_port + i if base_port else 0,
                display=display,
                display_codec=display_codec,
                rise_s=rise_s,
                fall_s=fall_s,
                hold_s=hold_s,
                video=video,
                barrier=barrier,
            )
            for i, lane_id in enumerate(ids)
        }
    )


def _page(
    site: SiteSim, where: str, lane_socket: list[str] | None, ledger: Path | None
) -> BenchPage:
    host, port = _split_host_port(where, "--bench-page")
    sockets: dict[str, str] = {}
    for item in lane_socket or []:
        lane, sep, path = item.partition("=")
        if not sep or lane not in site.lanes or not path:
            raise typer.BadParameter(
                f"--lane-socket {item!r} must be LANE=PATH with LANE in {list(site.lanes)}"
            )
        sockets[lane] = path
    return BenchPage(site, host, port, lane_sockets=sockets, ledger=ledger)


async def _serve(site: SiteSim, api: ControlApi, page: BenchPage | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lanes = await site.start()
    try:
        port = await api.start()
        line: dict[str, Any] = {"control": f"http://{api.host}:{port}", "lanes": lanes}
        if page is not None:
            await page.start()
            line["bench_page"] = page.url
        print(json.dumps(line), flush=True)
        await stop.wait()
    finally:
        if page is not None:
            await page.stop()
        await api.stop()
        with contextlib.suppress(Exception):
            await site.stop()


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="The scenario TOML file (docs/scenarios.md).")],
    control: Annotated[
        str, typer.Option(help="The control API of a running `parkedge-sim serve`.")
    ] = "http://127.0.0.1:8090",
    lane_socket: Annotated[
        list[str] | None,
        typer.Option(help="LANE=PATH: the lane daemon's control socket (overrides the file)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON outcome per step.")] = False,
) -> None:
    """Play a scenario against running lanes: exit 0 if every expectation held, 1 if not,
    2 if the scenario is malformed or the simulator cannot be reached."""
    from parkedge_sim.scenario import (
        ControlClient,
        Player,
        ScenarioError,
        load_scenario,
        with_sockets,
    )

    try:
        overrides = {}
        for item in lane_socket or []:
            lane, sep, path = item.partition("=")
            if not sep or not lane or not path:
                raise ScenarioError("--lane-socket", f"{item!r} must be LANE=PATH")
            overrides[lane] = path
        sc = with_sockets(load_scenario(scenario), overrides)
        player = Player(sc, ControlClient(control), _daemon_request)
    except (ScenarioError, ValueError) as exc:
        typer.echo(f"scenario error: {exc}", err=True)
        raise typer.Exit(2) from None

    def show(o: Any) -> None:
        if as_json:
            typer.echo(json.dumps(o.to_json(), ensure_ascii=False, default=str))
        else:
            mark = "ok  " if o.ok else "FAIL"
            why = f"  ({'; '.join(o.failures)})" if o.failures else ""
            typer.echo(f"{mark} {o.step:>3} {o.lane:<8} {o.name:<32} {o.result}{why}")

    try:
        outcomes = asyncio.run(player.play(show))
    except ScenarioError as exc:
        typer.echo(f"scenario error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (OSError, RuntimeError) as exc:
        typer.echo(f"cannot play against {control}: {exc}", err=True)
        raise typer.Exit(2) from None
    failed = [o for o in outcomes if not o.ok]
    if not as_json:
        typer.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} steps as expected")
    raise typer.Exit(1 if failed else 0)


def _daemon_request(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The lane daemon's control socket (one JSON line each way)."""
    from edge.control import request

    return request(Path(path), payload)


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary site directory afterwards.")
    ] = False,
) -> None:
    """Run a whole simulated site (broker, parkedge-central, entry and exit lane daemons on
    the simulator) through scripted vehicles; what `make demo` runs."""
    from parkedge_sim.demo import run_demo

    raise typer.Exit(run_demo(keep=keep))


def main() -> None:
    """Console-script entry point (``parkedge_sim.cli:main``)."""
    app(prog_name="parkedge-sim")


if __name__ == "__main__":
    main()
