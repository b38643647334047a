#!/usr/bin/env python3
"""Soak test of `gpt serve` on loopback: CLIENTS threads send a mix of requests back to back for SECONDS — completions
and chat, streaming and not, n 1-8, max_tokens 1-256, streams the client abandons midway, and bad requests (wrong
types, out-of-range numbers, broken JSON, a non-JSON content type) — and every few seconds the server's resident
memory (RSS) is sampled. Reports requests, answers by status, unexpected answers (a bad request answered otherwise
than 4xx, a good one otherwise than 200 or 429), RSS over time and its growth after the first minute, and the RSS
with nothing in flight, measured by holding the clients after the first minute and then every IDLE_INTERVAL seconds.

Then it opens STALLED connections that send half a request line and stop (all must be closed within the receive
timeout plus 10 s, while requests are served meanwhile), and sends FUZZ raw requests (random mutations of valid ones at the byte level: truncated, garbled, with huge or
false Content-Length, broken chunking), 64 connections at a time, each of which must be answered or closed by the
server within the receive timeout plus 10 s, and checks that the server still serves.

Standard library only. usage: scripts/serve_soak.py [--model DIR] [--clients 8] [--seconds 300] [--idle-interval 300] [--stalled 1000] [--fuzz 10000] [--pool-bytes N] [--cache-bytes N]
Without --model it makes a small random GPT-2-vocabulary model (4 layers, width 128).
"""
import argparse, http.client, json, os, random, re, socket, subprocess, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_model(gpt, work):
    data, run = os.path.join(work, "data"), os.path.join(work, "run")
    subprocess.run([gpt, "prepare", "--tokenizer", "gpt2", "--out", data, os.path.join(ROOT, "data/tinyshakespeare/input.txt")],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([gpt, "train", "--preset", "gpt2", "--layers", "4", "--width", "128", "--heads", "4", "--data", data, "--out", run,
                    "--max-iterations", "1", "--batch-size", "1", "--context", "512", "--eval-interval", "1",
                    "--eval-iterations", "1", "--warmup-iterations", "0"], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(run, "last")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


GOOD = [
    lambda r: ("/v1/completions", {"prompt": "To be or not to be", "max_tokens": r.randint(1, 256), "n": r.randint(1, 8),
                                   "temperature": r.choice([0, 0.7, 1.0]), "stream": r.random() < 0.5}),
    lambda r: ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell me a story " * r.randint(1, 20)}],
                                        "max_tokens": r.randint(1, 256), "n": r.randint(1, 4), "stream": r.random() < 0.5,
                                        "top_p": 0.9}),
    lambda r: ("/v1/completions", {"prompt": [r.randint(0, 50000) for _ in range(r.randint(1, 200))], "max_tokens": r.randint(1, 64),
                                   "logprobs": r.randint(0, 5), "echo": r.random() < 0.5}),
    lambda r: ("/tokenize", {"content": "Hello world " * r.randint(1, 50)}),
]
BAD = [
    ("/v1/completions", {"prompt": "hi", "temperature": 1e30}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": "ten"}),
    ("/v1/completions", {"prompt": "hi", "n": 99}),
    ("/v1/chat/completions", {"messages": [], "max_tokens": 1}),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}),
    ("/v1/completions", {"prompt": [1e300]}),
    ("/detokenize", {"tokens": [-1]}),
]


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.statuses = {}
        self.unexpected = []
        self.requests = 0

    def add(self, status, ok, what):
        with self.lock:
            self.requests += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if not ok and len(self.unexpected) < 20:
                self.unexpected.append(f"{what}: {status}")


class Pause:
    """Lets the main thread hold the clients between requests, to measure the server with nothing in flight."""
    def __init__(self):
        self.condition = threading.Condition()
        self.paused = False
        self.in_flight = 0

    def enter(self):
        with self.condition:
            self.condition.wait_for(lambda: not self.paused)
            self.in_flight += 1

    def leave(self):
        with self.condition:
            self.in_flight -= 1
            self.condition.notify_all()

    def hold(self):
        """Stops new requests and waits for those in flight to end."""
        with self.condition:
            self.paused = True
            self.condition.wait_for(lambda: self.in_flight == 0)

    def resume(self):
        with self.condition:
            self.paused = False
            self.condition.notify_all()


def client(port, deadline, seed, tally, pause):
    r = random.Random(seed)
    while time.time() < deadline:
        pause.enter()
        try:
            one_request(port, r, tally)
        finally:
            pause.leave()


def one_request(port, r, tally):
    kind = r.random()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        if kind < 0.15:
            path, body = r.choice(BAD)
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse(); response.read()
            tally.add(response.status, 400 <= response.status < 500, f"bad {path} {body}")
        elif kind < 0.2:
            connection.request("POST", "/v1/completions", '{"prompt": "hi"', {"Content-Type": "application/json"})
            response = connection.getresponse(); response.read()
            tally.add(response.status, response.status == 400, "broken JSON")
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            connection.request("POST", "/v1/completions", '{"prompt": "hi"}', {"Content-Type": "text/plain"})
            response = connection.getresponse(); response.read()
            tally.add(response.status, response.status == 415, "text/plain")
        else:
            path, body = r.choice(GOOD)(r)
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            if body.get("stream") and r.random() < 0.3:
                response.read(200)  # a client that goes away mid-stream
                connection.close()
                tally.add(response.status, response.status in (200, 429), f"abandoned {path}")
                return
            response.read()
            tally.add(response.status, response.status in (200, 429), f"{path} {json.dumps(body)[:120]}")
    except Exception as error:  # noqa: BLE001 — every failure is counted and reported
        tally.add(type(error).__name__, False, f"exception {error}")
    finally:
        connection.close()


def mutate(r, request):
    data = bytearray(request)
    for _ in range(r.randint(1, 8)):
        choice = r.random()
        if choice < 0.3 and data:
            del data[r.randrange(len(data)):][: r.randint(1, 50)]
        elif choice < 0.5 and data:
            data[r.randrange(len(data))] = r.randrange(256)
        elif choice < 0.7:
            position = r.randrange(len(data) + 1)
            data[position:position] = r.choice([b"\r\n", b"\x00", b"Content-Length: 18446744073709551615\r\n", b"{", b"9999999999",
                                                 b"Transfer-Encoding: chunked\r\n", b"-1e400", b'"', b"\xff\xfe"])
        else:
            data = data[: r.randrange(len(data) + 1)]
    return bytes(data)


def raw_exchange(port, data, shut, timeout):
    """Sends raw bytes on a fresh connection and reads until the server closes it; returns (answered or closed in
    time, seconds)."""
    start = time.time()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(timeout + 10)
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except socket.timeout:
            return False, time.time() - start
        except OSError:
            pass  # reset by the server: closed, as it should be
    return True, time.time() - start


def fuzz(port, count, timeout, concurrency=64):
    r = random.Random(7)
    bodies = [json.dumps(body(r)[1] if callable(body) else body[1]).encode() for body in GOOD + BAD]
    cases = []
    for _ in range(count):
        body = r.choice(bodies)
        request = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)
        cases.append((mutate(r, request), r.random() < 0.5))
    unanswered, slowest, done = 0, 0.0, 0
    with ThreadPoolExecutor(concurrency) as pool:
        for answered, seconds in pool.map(lambda case: raw_exchange(port, case[0], case[1], timeout), cases):
            unanswered += 0 if answered else 1
            slowest = max(slowest, seconds)
            done += 1
            if done % 1000 == 0:
                print(f"  fuzzed {done} requests, {unanswered} unanswered, slowest {slowest:.1f} s", flush=True)
    return unanswered, slowest


def stalled(port, count, timeout):
    """Opens COUNT connections that send half a request line and stop, serves requests meanwhile, and counts the
    stalled connections the server closes within the receive timeout plus 10 s."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 256)), hard))
    start = time.time()
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHo")
        sockets.append(s)
    served = []
    for _ in range(5):
        t = time.time()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/v1/completions", json.dumps({"prompt": "Hello", "max_tokens": 8}), {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        served.append((response.status, time.time() - t))
    closed = 0
    for s in sockets:
        s.settimeout(max(0.01, start + timeout + 10 - time.time()))
        try:
            closed += s.recv(1) == b""
        except socket.timeout:
            pass
        except OSError:
            closed += 1
        s.close()
    print(f"stalled: {count} connections sending half a request line: {closed} closed by the server within {timeout + 10:.0f} s; "
          f"requests served meanwhile: {[status for status, _ in served]}, slowest {max(t for _, t in served):.3f} s", flush=True)
    return closed == count and all(status == 200 for status, _ in served)


def idle_rss(port, pid, pause):
    """The server's RSS with no request in flight: holds the clients, waits for their requests to end and for the server's
    batch and queue to empty (an abandoned stream ends when the server notices the closed connection), then for the
    server to hand its pooled buffers back, which it does when it goes idle."""
    pause.hold()
    for _ in range(600):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("GET", "/metrics")
        metrics = connection.getresponse().read().decode()
        connection.close()
        gauges = dict(re.findall(r"^(gpt_batch_size|gpt_queue_depth) (\S+)$", metrics, re.M))
        if float(gauges.get("gpt_batch_size", 1)) == 0 and float(gauges.get("gpt_queue_depth", 1)) == 0:
            break
        time.sleep(0.1)
    time.sleep(2)
    return rss_mb(pid)


def rss_trend(samples, first_minute_peak):
    """RSS after the first minute in figures that tell growth from the ups and downs of the live batch: the highest
    sample against the highest of the first minute, a least-squares line's slope, and the mean of the first and of
    the last fifth of the samples."""
    later = [(t, rss) for t, rss in samples if t >= 60]
    if len(later) < 5:
        return "RSS trend: too few samples after the first minute"
    n = len(later)
    mean_t, mean_rss = sum(t for t, _ in later) / n, sum(rss for _, rss in later) / n
    slope = sum((t - mean_t) * (rss - mean_rss) for t, rss in later) / sum((t - mean_t) ** 2 for t, _ in later)
    fifth = max(1, n // 5)
    first, last = sum(rss for _, rss in later[:fifth]) / fifth, sum(rss for _, rss in later[-fifth:]) / fifth
    peak = max(rss for _, rss in later)
    return (f"RSS trend after the first minute: highest {peak:.1f} MB against the first minute's highest {first_minute_peak:.1f} MB "
            f"({(peak / first_minute_peak - 1) * 100:+.1f}%); least-squares slope {slope * 600:+.2f} MB per 10 minutes; "
            f"mean of the first fifth {first:.1f} MB, of the last fifth {last:.1f} MB ({(last / first - 1) * 100:+.1f}%); "
            f"range {min(rss for _, rss in later):.1f}-{peak:.1f} MB")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--fuzz", type=int, default=10000)
    parser.add_argument("--stalled", type=int, default=1000, help="stalled connections opened at once after the load")
    parser.add_argument("--receive-timeout", type=float, default=5)
    parser.add_argument("--pool-bytes", type=int, default=32 << 20, help="the server's --pool-bytes")
    parser.add_argument("--cache-bytes", type=int, default=512 << 20, help="the server's --cache-bytes (its prompt cache; 0: none)")
    parser.add_argument("--sample", type=float, default=10, help="seconds between RSS samples")
    parser.add_argument("--idle-interval", type=float, default=300,
                        help="seconds between holds of the clients (the first after one minute) to sample RSS with nothing in flight")
    args = parser.parse_args()
    gpt = os.path.join(ROOT, ".build/release/gpt")
    with tempfile.TemporaryDirectory() as work:
        model = args.model or make_model(gpt, work)
        server = subprocess.Popen([gpt, "serve", "--model", model, "--port", "0", "--max-batch", "16", "--max-queue", "64",
                                   "--receive-timeout", str(args.receive_timeout), "--pool-bytes", str(args.pool_bytes),
                                   "--cache-bytes", str(args.cache_bytes)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = ""
        while not (match := re.search(r"http://127\.0\.0\.1:(\d+)", seen)):
            line = server.stdout.readline()
            if not line:
                raise SystemExit(f"gpt serve did not start: {seen}")
            seen += line
        port = int(match.group(1))
        threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
        tally = Tally()
        start = time.time()
        deadline = start + args.seconds
        pause = Pause()
        threads = [threading.Thread(target=client, args=(port, deadline, seed, tally, pause)) for seed in range(args.clients)]
        for t in threads:
            t.start()
        samples, idle_samples = [], []
        next_idle = 60
        while any(t.is_alive() for t in threads):
            if time.time() - start >= next_idle and time.time() < deadline:
                idle_samples.append((time.time() - start, idle_rss(port, server.pid, pause)))
                print(f"  {idle_samples[-1][0]:6.0f} s  RSS {idle_samples[-1][1]:7.1f} MB with nothing in flight (clients held)", flush=True)
                pause.resume()
                next_idle += args.idle_interval
                time.sleep(args.sample)
                continue
            samples.append((time.time() - start, rss_mb(server.pid), tally.requests))
            print(f"  {samples[-1][0]:6.0f} s  RSS {samples[-1][1]:7.1f} MB  {samples[-1][2]} requests", flush=True)
            time.sleep(args.sample)
        for t in threads:
            t.join()
        idle = idle_rss(port, server.pid, pause)
        after_minute = [rss for t, rss, _ in samples if t >= 60] or [samples[-1][1]]
        first_minute_peak = max(rss for t, rss, _ in samples if t < 60)
        print(f"soak: {args.clients} clients for {args.seconds} s: {tally.requests} requests; answers by status: "
              f"{dict(sorted((str(k), v) for k, v in tally.statuses.items()))}; unexpected: {len(tally.unexpected)}")
        for line in tally.unexpected:
            print("  unexpected:", line)
        print(f"RSS: first minute's end {after_minute[0]:.1f} MB, last sample {samples[-1][1]:.1f} MB, highest after the first minute "
              f"{max(after_minute):.1f} MB ({(max(after_minute) / after_minute[0] - 1) * 100:+.1f}%), idle after the load {idle:.1f} MB")
        print(rss_trend([(t, rss) for t, rss, _ in samples], first_minute_peak))
        if idle_samples:
            print(f"RSS with nothing in flight (what the server keeps, apart from the live batch): after the first minute "
                  f"{idle_samples[0][1]:.1f} MB, after the whole load {idle:.1f} MB ({(idle / idle_samples[0][1] - 1) * 100:+.1f}%); "
                  f"at each hold: {', '.join(f'{t:.0f} s {rss:.1f}' for t, rss in idle_samples)}")
        stalls_closed = stalled(port, args.stalled, args.receive_timeout) if args.stalled else True
        unanswered, slowest = fuzz(port, args.fuzz, args.receive_timeout) if args.fuzz else (0, 0.0)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/v1/completions", json.dumps({"prompt": "Hello", "max_tokens": 3}), {"Content-Type": "application/json"})
        alive = connection.getresponse().status == 200
        crashed = server.poll() is not None
        print(f"fuzz: {args.fuzz} raw requests, {unanswered} unanswered within {args.receive_timeout + 10:.0f} s, slowest {slowest:.1f} s; "
              f"server {'crashed' if crashed else 'alive'}, {'serving' if alive else 'NOT serving'} afterwards")
        server.terminate()
        server.wait(timeout=60)
        ok = not tally.unexpected and unanswered == 0 and alive and not crashed and stalls_closed
        print("OK" if ok else "FAILED")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
