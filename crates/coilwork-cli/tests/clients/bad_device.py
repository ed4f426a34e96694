"""A broken RTU device on a serial line: every answer is wrong in turn.

usage: bad_device.py PTY
Answers each request (FC3 of one register expected) with, in turn: a bad
CRC, the right answer from the wrong unit, a truncated frame, an answer
with the wrong byte count, then a good answer. Prints 'ready'.
"""
import sys

import serial


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes([crc & 0xFF, crc >> 8])


def frame(body):
    return body + crc16(body)


line = serial.Serial(sys.argv[1], 19200, timeout=0.02)
print("ready", flush=True)
n = 0
while True:
    req = line.read(256)
    if not req:
        continue
    unit = req[0]
    good = frame(bytes([unit, 3, 2, 0x12, 0x34]))
    answers = [
        good[:-1] + bytes([good[-1] ^ 0xFF]),  # bad CRC
        frame(bytes([unit + 1, 3, 2, 0x12, 0x34])),  # wrong unit
        good[:4],  # truncated
        frame(bytes([unit, 3, 4, 0x12, 0x34])),  # byte count says 4, 2 follow
        good,
    ]
    line.write(answers[n % len(answers)])
    n += 1
