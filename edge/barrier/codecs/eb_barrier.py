"""Proprietary RS-485 barrier protocol: ``EB | addr | cmd | data | XOR`` (5 bytes, 9600 8N1).

XOR is ``addr ^ cmd ^ data`` (the 0xEB header excluded). Every command is answered with
``EB | addr | cmd|0x80 | status | XOR``: the echo proves which command was taken and the status
byte carries the arm position and the controller's loop inputs, so loops can be read from the
barrier ("barrier-status" loops).

====  ============  ============================================================
cmd   name          data
====  ============  ============================================================
0x40  OPEN          0; raise, auto-close once the closing loop has been crossed
0x41  OPEN_N        n vehicles (0 counts as 1) to pass before auto-close (fleet)
0x42  DOWN          0; lower (the controller's anti-crush still decides)
0x43  UP            0; raise and hold up until DOWN or RESTORE
0x4A  FORBID        0; refuse OPEN/OPEN_N/UP (lane closed)
0x4B  RESTORE       0; leave forbid and hold modes
0x50  STATUS        0; query only (our design: the vendor sheet has no query)
====  ============  ============================================================

Status byte: bits 0-1 arm (0 down, 1 rising, 2 up, 3 falling), bit 2 fault, bit 3 forbidden,
bit 4 arming loop, bit 5 closing loop, bit 6 photocell, bit 7 held up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from edge.barrier.codecs._framing import FrameDecoder, FrameScanner
from edge.barrier.interfaces import ArmState, LoopInputs

HEADER = 0xEB
FRAME_LEN = 5
REPLY_BIT = 0x80


class EbCommand(IntEnum):
    OPEN = 0x40
    OPEN_N = 0x41
    DOWN = 0x42
    UP = 0x43
    FORBID = 0x4A
    RESTORE = 0x4B
    STATUS = 0x50


_ARM_CODES = {ArmState.DOWN: 0, ArmState.RISING: 1, ArmState.UP: 2, ArmState.FALLING: 3}
_CODE_ARMS = {v: k for k, v in _ARM_CODES.items()}


@dataclass(frozen=True)
class EbStatus:
    arm: ArmState = ArmState.DOWN  # DOWN/RISING/UP/FALLING; see ``state`` for faults
    fault: bool = False
    forbidden: bool = False
    arming: bool = False
    closing: bool = False
    photocell: bool = False
    held: bool = False

    @property
    def state(self) -> ArmState:
        return ArmState.FAULT if self.fault else self.arm

    @property
    def loops(self) -> LoopInputs:
        return LoopInputs(arming=self.arming, closing=self.closing, photocell=self.photocell)

    def to_byte(self) -> int:
        arm = _ARM_CODES.get(self.arm)
        if arm is None:
            raise ValueError(f"arm position {self.arm} has no status code")
        return (
            arm
            | self.fault << 2
            | self.forbidden << 3
            | self.arming << 4
            | self.closing << 5
            | self.photocell << 6
            | self.held << 7
        )

    @classmethod
    def from_byte(cls, b: int) -> EbStatus:
        return cls(
            arm=_CODE_ARMS[b & 0x03],
            fault=bool(b & 0x04),
            forbidden=bool(b & 0x08),
            arming=bool(b & 0x10),
            closing=bool(b & 0x20),
            photocell=bool(b & 0x40),
            held=bool(b & 0x80),
        )


@dataclass(frozen=True)
class EbFrame:
    address: int
    cmd: int
    data: int = 0

    @property
    def is_reply(self) -> bool:
        return bool(self.cmd & REPLY_BIT)

    @property
    def status(self) -> EbStatus:
        """The status a reply carries."""
        return EbStatus.from_byte(self.data)


def encode(frame: EbFrame) -> bytes:
    for name, v in (("address", frame.address), ("cmd", frame.cmd), ("data", frame.data)):
        if not 0 <= v <= 0xFF:
            raise ValueError(f"{name} must be 0..255, got {v}")
    return bytes(
        [HEADER, frame.address, frame.cmd, frame.data, frame.address ^ frame.cmd ^ frame.data]
    )


def command(address: int, cmd: EbCommand, data: int = 0) -> bytes:
    return encode(EbFrame(address, int(cmd), data))


def reply(address: int, cmd: int, status: EbStatus) -> bytes:
    return encode(EbFrame(address, (cmd | REPLY_BIT) & 0xFF, status.to_byte()))


def _verify(frame: bytes) -> bool:
    return frame[1] ^ frame[2] ^ frame[3] == frame[4]


class Decoder(FrameDecoder[EbFrame]):
    """Incremental EB decoder: ``feed(bytes) -> [EbFrame]``; bad checksums are counted."""

    def __init__(self) -> None:
        super().__init__(FrameScanner(
            header=bytes([HEADER]),
            prefix_len=4,
            body_len=lambda p: 0,
            trailer_len=1,
            verify=_verify,
            max_body=0,
        ), lambda f: EbFrame(f[1], f[2], f[3]))
