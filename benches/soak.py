#!/usr/bin/env python3
"""Soak load driver for `coilwork serve` (benches/soak.sh runs it).

Against one Modbus/TCP server for DURATION seconds, at once:
  - VALIDATORS well-formed clients, each writing (FC16) and reading back (FC3)
    its own four holding registers, paced; every answer is checked;
  - garbage clients: random bytes and MBAP headers with bad lengths;
  - slowloris clients: a valid frame one byte a second;
  - connect/RST churn (SO_LINGER 0), some after half a request;
  - periodic bursts of connections past --max-connections.
Samples the server's RSS, open descriptors and threads every second.

Prints one JSON object (the figures) and exits 1 if a well-formed client saw
an error, an acknowledged write was lost, the server died, or RSS or
descriptors drifted past the bounds between the baseline (minute 2, or a
quarter of a short run) and the end.
"""
import asyncio, json, os, random, socket, struct, sys, time

HOST = "127.0.0.1"
TIMEOUT = 5.0


class Stats:
    def __init__(self):
        self.served = 0          # answers to well-formed clients
        self.errors = 0          # errors seen by well-formed clients
        self.error_kinds = {}
        self.lost = 0            # acknowledged writes not read back
        self.acked = 0
        self.garbage_sent = 0
        self.slow_conns = 0
        self.churn = 0
        self.burst_conns = 0
        self.burst_refused = 0
        self.burst_served = 0

    def error(self, kind):
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


async def exchange(reader, writer, tid, unit, pdu):
    writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
    await writer.drain()
    head = await asyncio.wait_for(reader.readexactly(7), TIMEOUT)
    rtid, proto, length, runit = struct.unpack(">HHHB", head)
    body = await asyncio.wait_for(reader.readexactly(length - 1), TIMEOUT)
    if rtid != tid or proto != 0 or runit != unit:
        raise ValueError("mbap mismatch")
    return body


async def validator(idx, port, stop, stats, last):
    """Owns holding registers 4*idx .. 4*idx+3 of unit 1."""
    base = 4 * idx
    tid = 0
    reader, writer = await asyncio.open_connection(HOST, port)
    rng = random.Random(idx)
    try:
        while not stop.is_set():
            values = [rng.randrange(65536) for _ in range(4)]
            tid = (tid + 1) & 0xFFFF
            pdu = struct.pack(">BHHB4H", 16, base, 4, 8, *values)
            try:
                ans = await exchange(reader, writer, tid, 1, pdu)
                if ans != struct.pack(">BHH", 16, base, 4):
                    stats.error("write answer " + ans[:2].hex())
                else:
                    stats.served += 1
                    stats.acked += 1
                    last[idx] = values
                tid = (tid + 1) & 0xFFFF
                ans = await exchange(reader, writer, tid, 1, struct.pack(">BHH", 3, base, 4))
                if ans[:2] != bytes([3, 8]):
                    stats.error("read answer " + ans[:2].hex())
                else:
                    stats.served += 1
                    if list(struct.unpack(">4H", ans[2:10])) != last.get(idx):
                        stats.lost += 1
                        stats.error("read-back mismatch")
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
                stats.error(type(e).__name__)
                writer.close()
                await asyncio.sleep(0.2)
                reader, writer = await asyncio.open_connection(HOST, port)
            await asyncio.sleep(0.02)
    finally:
        writer.close()


async def final_check(port, stats, last):
    """After the load: every client's last acknowledged write is still there."""
    reader, writer = await asyncio.open_connection(HOST, port)
    for idx, values in sorted(last.items()):
        ans = await exchange(reader, writer, idx & 0xFFFF, 1, struct.pack(">BHH", 3, 4 * idx, 4))
        if list(struct.unpack(">4H", ans[2:10])) != values:
            stats.lost += 1
    writer.close()


async def garbage(port, stop, stats, rng):
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            for _ in range(rng.randrange(1, 20)):
                if rng.random() < 0.5:
                    data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
                else:
                    bad_len = rng.choice([0, 1, 2, 255, 254, 0xFFFF, 300])
                    data = struct.pack(">HHHB", rng.randrange(65536), rng.choice([0, 0, 1]), bad_len, 1)
                    data += bytes(rng.randrange(256) for _ in range(rng.randrange(0, 20)))
                writer.write(data)
                await writer.drain()
                stats.garbage_sent += 1
                try:
                    await asyncio.wait_for(reader.read(512), 0.05)
                except asyncio.TimeoutError:
                    pass
            writer.close()
        except OSError:
            pass
        await asyncio.sleep(0.05)


async def slowloris(port, stop, stats):
    frame = struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, 1)
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            stats.slow_conns += 1
            for b in frame[:-1]:
                if stop.is_set():
                    break
                writer.write(bytes([b]))
                await writer.drain()
                await asyncio.sleep(1.0)
            writer.close()
        except OSError:
            await asyncio.sleep(0.5)


def rst_close(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def churn(port, stop, stats, rng):
    half = struct.pack(">HHHBBHH", 9, 0, 6, 1, 3, 0, 1)[:9]
    while not stop.is_set():
        try:
            _, writer = await asyncio.open_connection(HOST, port)
            if rng.random() < 0.5:
                writer.write(half)
                await writer.drain()
            rst_close(writer)
            stats.churn += 1
        except OSError:
            pass
        await asyncio.sleep(0.02)


async def burst_one(port, stats):
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        stats.burst_refused += 1
        return
    stats.burst_conns += 1
    try:
        await exchange(reader, writer, 7, 1, struct.pack(">BHH", 3, 4000, 1))
        stats.burst_served += 1
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
        stats.burst_refused += 1
    await asyncio.sleep(1.0)
    writer.close()


async def bursts(port, stop, stats, size, period):
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), period)
        except asyncio.TimeoutError:
            await asyncio.gather(*(burst_one(port, stats) for _ in range(size)))


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    rss_kib = int(fields["VmRSS"].split()[0])
    threads = int(fields["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kib, fds, threads


async def sampler(pid, stop, samples, t0):
    while not stop.is_set():
        try:
            samples.append((time.monotonic() - t0, *sample(pid)))
        except (OSError, KeyError):
            samples.append((time.monotonic() - t0, None, None, None))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


async def main(port, pid, duration, validators):
    stats, last, samples = Stats(), {}, []
    stop = asyncio.Event()
    t0 = time.monotonic()
    rng = random.Random(17)
    tasks = [asyncio.create_task(sampler(pid, stop, samples, t0))]
    tasks += [asyncio.create_task(validator(i, port, stop, stats, last)) for i in range(validators)]
    tasks += [asyncio.create_task(garbage(port, stop, stats, random.Random(100 + i))) for i in range(8)]
    tasks += [asyncio.create_task(slowloris(port, stop, stats)) for _ in range(8)]
    tasks += [asyncio.create_task(churn(port, stop, stats, random.Random(200 + i))) for i in range(4)]
    tasks.append(asyncio.create_task(bursts(port, stop, stats, 150, max(5.0, duration / 20))))
    await asyncio.sleep(duration)
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, Exception):
            stats.error("task " + type(r).__name__)
    await final_check(port, stats, last)
    return stats, samples


def report(stats, samples, duration, pid):
    alive = os.path.exists(f"/proc/{pid}")
    good = [s for s in samples if s[1] is not None]
    base_t = min(120.0, duration / 4)
    base = next((s for s in good if s[0] >= base_t), good[0] if good else None)
    end = good[-1] if good else None
    fig = {
        "duration_s": duration,
        "requests_served": stats.served,
        "acknowledged_writes": stats.acked,
        "well_formed_client_errors": stats.errors,
        "error_kinds": stats.error_kinds,
        "acknowledged_writes_lost": stats.lost,
        "garbage_messages": stats.garbage_sent,
        "slowloris_connections": stats.slow_conns,
        "rst_churn_connections": stats.churn,
        "burst_connections_opened": stats.burst_conns,
        "burst_served": stats.burst_served,
        "burst_refused": stats.burst_refused,
        "server_alive": alive,
        "baseline_at_s": round(base[0], 1) if base else None,
        "rss_kib_baseline_end_max": [base[1], end[1], max(s[1] for s in good)] if base else None,
        "fds_baseline_end_max": [base[2], end[2], max(s[2] for s in good)] if base else None,
        "threads_baseline_end_max": [base[3], end[3], max(s[3] for s in good)] if base else None,
    }
    # Bounds: RSS may grow 25 % + 16 MiB past the baseline; descriptors and
    # threads come back to within 64 / 4 of the baseline once the load stops.
    ok = alive and stats.errors == 0 and stats.lost == 0 and base is not None
    if base:
        ok = ok and end[1] <= base[1] * 1.25 + 16384 and end[2] <= base[2] + 64 and end[3] <= base[3] + 4
    fig["pass"] = ok
    return fig, ok


if __name__ == "__main__":
    port, pid, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    validators = int(os.environ.get("SOAK_VALIDATORS", "200"))
    stats, samples = asyncio.run(main(port, pid, duration, validators))
    fig, ok = report(stats, samples, duration, pid)
    print(json.dumps(fig))
    if os.environ.get("SOAK_SAMPLES"):
        with open(os.environ["SOAK_SAMPLES"], "w") as f:
            for s in samples:
                f.write(" ".join(str(x) for x in s) + "\n")
    sys.exit(0 if ok else 1)
