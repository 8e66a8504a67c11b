"""Checksums shared by the codecs (pure)."""

from __future__ import annotations


def xor8(data: bytes) -> int:
    """XOR of every byte (the BCC most RS-485 boards use)."""
    acc = 0
    for b in data:
        acc ^= b
    return acc


def _crc16_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc16_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: poly 0x8005 reflected (0xA001), init 0xFFFF, no final XOR.

    Check value: crc16_modbus(b"123456789") == 0x4B37.
    """
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc
