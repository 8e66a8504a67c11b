"""What the lane display shows and says. Pure text, bilingual where the board has room.

A lane LED board is typically 4 lines of 16 columns (a CJK character takes 2), so the
Chinese line carries the meaning and numbers stay short.
"""

from __future__ import annotations

from decimal import Decimal

from edge.barrier.interfaces import Colour, DisplayLine


def columns(text: str) -> int:
    """Display columns: CJK and full-width characters take two."""
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def fit(text: str, width: int = 16) -> str:
    """Cut a line to the board's width without splitting a wide character."""
    out, used = [], 0
    for ch in text:
        w = 2 if ord(ch) > 0x2E80 else 1
        if used + w > width:
            break
        out.append(ch)
        used += w
    return "".join(out)


def duration_zh(minutes: int) -> str:
    h, m = divmod(max(0, minutes), 60)
    if h >= 24:
        d, h = divmod(h, 24)
        return f"{d}天{h}小时{m}分"
    return f"{h}小时{m}分" if h else f"{m}分钟"


def money(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.01'))}"


def entry_member(plate: str, balance: int) -> tuple[tuple[DisplayLine, ...], str]:
    lines = (
        DisplayLine("欢迎光临", Colour.GREEN),
        DisplayLine(plate, Colour.GREEN),
        DisplayLine(fit(f"积分余额 {balance}分"), Colour.YELLOW),
        DisplayLine("请通行", Colour.GREEN),
    )
    return lines, f"欢迎光临 {plate} 积分余额{balance}分"


def entry_visitor(plate: str) -> tuple[tuple[DisplayLine, ...], str]:
    lines = (
        DisplayLine("欢迎光临", Colour.GREEN),
        DisplayLine(plate, Colour.GREEN),
        DisplayLine("临时车辆", Colour.YELLOW),
        DisplayLine("请通行", Colour.GREEN),
    )
    return lines, f"欢迎光临 {plate}"


def entry_refused(plate: str) -> tuple[tuple[DisplayLine, ...], str]:
    lines = (
        DisplayLine(plate, Colour.RED),
        DisplayLine("禁止通行", Colour.RED),
        DisplayLine("请联系管理员", Colour.RED),
        DisplayLine("Use intercom", Colour.RED),
    )
    return lines, f"{plate} 禁止通行 请联系管理员"


def exit_unknown(plate: str) -> tuple[tuple[DisplayLine, ...], str]:
    lines = (
        DisplayLine(plate, Colour.RED),
        DisplayLine("无入场记录", Colour.RED),
        DisplayLine("请联系管理员", Colour.RED),
        DisplayLine("No entry record", Colour.RED),
    )
    return lines, f"{plate} 无入场记录 请联系管理员"


def exit_lines(
    plate: str, quote_lines: list[str], payable: Decimal, *, uncertain: bool
) -> tuple[tuple[DisplayLine, ...], str]:
    """The quote's own display lines, then the request to pay when something is owed."""
    colour = Colour.GREEN if payable == 0 else Colour.YELLOW
    lines = [DisplayLine(fit(t), colour) for t in quote_lines[:4]]
    if payable > 0:
        ask = "请到缴费机缴费" if uncertain else f"请缴费 {money(payable)}元"
        if len(lines) >= 4:
            lines[-1] = DisplayLine(fit(ask), Colour.RED)
        else:
            lines.append(DisplayLine(fit(ask), Colour.RED))
        speak = f"{plate} 应付{money(payable)}元 请缴费"
    else:
        speak = f"{plate} 一路顺风"
    return tuple(lines), speak


def idle(lines: list[str]) -> list[DisplayLine]:
    return [DisplayLine(fit(t), Colour.GREEN) for t in lines]
