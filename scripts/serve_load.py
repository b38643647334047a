#!/usr/bin/env python3
"""Load test of `gpt serve` (or, with --llama-server, of llama.cpp's `llama-server` on a GGUF file) on loopback: for each concurrency level, that many streaming clients send completions
back to back for a fixed time; reports total generated tokens/s while every client streams (the tokens that arrived
before the deadline; the requests still running then finish, and the figure over the whole run, tail included, is shown
beside it), time to first token (p50/p99), errors, the server's resident memory once loaded and over the run and the CPU time the load
client itself took from the same cores.

Without --model it makes GPT-2 124M with random weights (one training step of `gpt train --preset gpt2` on Tiny
Shakespeare), which decodes exactly as fast as the trained model.

usage: scripts/serve_load.py [--model DIR | --llama-server BIN --gguf FILE] [--clients 1,8,32] [--seconds 60]
                             [--prompt-tokens 32] [--max-tokens 128]
needs: pip install httpx (the openai package brings it)
"""
import argparse, asyncio, json, os, random, re, socket, statistics, subprocess, sys, tempfile, threading, time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_model(gpt, work):
    data, run = os.path.join(work, "data"), os.path.join(work, "run")
    subprocess.run([gpt, "prepare", "--tokenizer", "gpt2", "--out", data, os.path.join(ROOT, "data/tinyshakespeare/input.txt")],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([gpt, "train", "--preset", "gpt2", "--data", data, "--out", run, "--max-iterations", "1", "--batch-size", "1",
                    "--context", "1024", "--eval-interval", "1", "--eval-iterations", "1", "--warmup-iterations", "0"],
                   check=True, stdout=subprocess.DEVNULL)
    return os.path.join(run, "last")


def start_server(gpt, model, max_batch, options=("--served-model-name", "load")):
    process = subprocess.Popen([gpt, "serve", "--model", model, "--port", "0", "--max-batch", str(max_batch),
                                "--max-queue", "256", *options],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    while not (match := re.search(r"Serving .* on (http://127\.0\.0\.1:\d+)", seen)):
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"gpt serve did not start: {seen}")
        seen += line
    drain(process)
    return process, match.group(1)


def drain(process):
    """Reads the server's output from here on (a server blocks, and its measurements with it, once the pipe it logs to
    is full)."""
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()


def start_llama_server(binary, gguf, max_batch, threads):
    """llama-server with --max-batch slots of 1,024 tokens each (GPT-2's context), continuous batching (its default)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
                                "-np", str(max_batch), "-c", str(1024 * max_batch), "--no-webui"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"llama-server did not start: {process.stdout.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                drain(process)
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("llama-server did not answer /health in 120 s")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def client(http, url, prompts, args, deadline, results):
    """Streams completions back to back until the deadline. Per request: the time to its first token, its completion
    tokens, and how many of them arrived before the deadline (its tokens prorated by the share of its text chunks that
    arrived by then), so that the figure covers only the time when every client is streaming."""
    while time.monotonic() < deadline:
        prompt = random.choice(prompts)
        # llama-server reads a list of token lists as several prompts; a list of token ids is one prompt to both.
        body = {"model": "load", "prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0.8, "stream": True,
                "stream_options": {"include_usage": True}, "logit_bias": {"50256": -100}}
        start = time.monotonic()
        first, tokens, chunks, chunks_in_time = None, None, 0, 0
        try:
            async with http.stream("POST", url + "/v1/completions", json=body) as response:
                if response.status_code != 200:
                    results["errors"].append(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
                    continue
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    # Only the first text chunk, the usage chunk and errors are parsed: the client shares the
                    # server's cores, and parsing every chunk would take time from the server.
                    if '"error"' in line:
                        results["errors"].append(line[6:200])
                    elif '"usage":{' in line:
                        tokens = json.loads(line[6:])["usage"]["completion_tokens"]
                    elif '"finish_reason":null' in line:
                        chunks += 1
                        chunks_in_time += time.monotonic() <= deadline
                        if first is None and json.loads(line[6:])["choices"][0]["text"]:
                            first = time.monotonic() - start
        except Exception as error:  # noqa: BLE001 - every failure is counted and shown
            results["errors"].append(repr(error))
            continue
        if first is None or tokens is None:
            results["errors"].append("a stream ended without text or usage")
            continue
        results["ttft"].append(first)
        results["tokens"] += tokens
        results["tokens_in_time"] += tokens * chunks_in_time / max(chunks, 1)
        results["requests"] += 1


async def level(url, prompts, clients, args, pid):
    results = {"ttft": [], "tokens": 0, "tokens_in_time": 0.0, "requests": 0, "errors": []}
    cpu = time.process_time()
    memory = []
    start = time.monotonic()
    deadline = start + args.seconds

    async def sample_memory():
        while True:
            memory.append((time.monotonic() - start, rss_mib(pid)))
            await asyncio.sleep(0.5)
    sampler = asyncio.create_task(sample_memory())
    # llama-server (cpp-httplib) closes a kept-alive connection after a few requests, which a client can meet as an
    # error; --new-connections opens one a request, for both servers alike.
    keepalive = 0 if args.new_connections else clients + 4
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=keepalive)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(http, url, prompts, args, deadline, results) for _ in range(clients)))
    wall = time.monotonic() - start
    client_cpu = time.process_time() - cpu
    sampler.cancel()
    first_tenth = [m for t, m in memory if t <= wall * 0.2]
    last_tenth = [m for t, m in memory if t >= wall * 0.8]
    return {
        "clients": clients, "wall_s": wall, "requests": results["requests"], "tokens": results["tokens"],
        "tokens_per_s": results["tokens_in_time"] / args.seconds,
        "tokens_per_s_whole_run": results["tokens"] / wall, "client_cpu_s": client_cpu, "ttft_p50_s": percentile(results["ttft"], 0.5),
        "ttft_p99_s": percentile(results["ttft"], 0.99), "errors": len(results["errors"]),
        "error_examples": results["errors"][:3], "rss_peak_mib": max(m for _, m in memory),
        "rss_first_fifth_mib": max(first_tenth), "rss_last_fifth_mib": max(last_tenth),
    }


async def measure(url, prompts, args, pid):
    rows = []
    for clients in args.clients:
        row = await level(url, prompts, clients, args, pid)
        rows.append(row)
        print(f"{clients:>3} clients: {row['tokens_per_s']:8.1f} tokens/s while all stream ({row['tokens_per_s_whole_run']:.1f} over "
              f"the whole run: {row['requests']} requests, {row['tokens']} tokens in {row['wall_s']:.1f} s, load client "
              f"{row['client_cpu_s']:.1f} CPU s), time to first token p50 {row['ttft_p50_s'] * 1000:.0f} ms p99 {row['ttft_p99_s'] * 1000:.0f} ms, "
              f"errors {row['errors']}, RSS peak {row['rss_peak_mib']:.0f} MiB (first fifth {row['rss_first_fifth_mib']:.0f}, "
              f"last fifth {row['rss_last_fifth_mib']:.0f})", flush=True)
        for example in row["error_examples"]:
            print("    error:", example)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpt", default=os.path.join(ROOT, ".build/release/gpt"))
    parser.add_argument("--model", help="model directory (default: GPT-2 124M with random weights)")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels, comma-separated")
    parser.add_argument("--seconds", type=float, default=60, help="duration of each level")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens generated per request")
    parser.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch (llama-server's -np slots)")
    parser.add_argument("--llama-server", help="measure this llama-server binary instead, on --gguf")
    parser.add_argument("--gguf", help="the GGUF file llama-server serves")
    parser.add_argument("--new-connections", action="store_true", help="a new connection for each request (no keep-alive)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="llama-server's -t")
    parser.add_argument("--output", help="write the figures here as JSON")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="serve-load-") as work:
        if args.llama_server:
            if not args.gguf:
                raise SystemExit("--llama-server needs --gguf")
            model = args.gguf
            process, url = start_llama_server(args.llama_server, args.gguf, args.max_batch, args.threads)
        else:
            model = args.model or make_model(args.gpt, work)
            process, url = start_server(args.gpt, model, args.max_batch)
        try:
            time.sleep(2)
            loaded = rss_mib(process.pid)
            # Prompts of exactly --prompt-tokens tokens from Tiny Shakespeare.
            text = open(os.path.join(ROOT, "data/tinyshakespeare/input.txt")).read()
            ids = httpx.post(url + "/tokenize", json={"content": text[:200_000]}, timeout=60).json()["tokens"]
            rng = random.Random(0)
            prompts = [ids[s:s + args.prompt_tokens] for s in (rng.randrange(len(ids) - args.prompt_tokens) for _ in range(256))]
            random.seed(0)
            server = "llama-server" if args.llama_server else "gpt serve"
            print(f"{server} on {model}: {args.seconds:g} s per level, {args.prompt_tokens}-token prompts, "
                  f"{args.max_tokens} tokens per request, --max-batch {args.max_batch}", flush=True)
            print(f"RSS after loading: {loaded:.0f} MiB", flush=True)
            rows = asyncio.run(measure(url, prompts, args, process.pid))
            for row in rows:
                row["rss_loaded_mib"] = loaded
        finally:
            process.terminate()
            process.wait(timeout=120)
    base = rows[0]["tokens_per_s"]
    for row in rows[1:]:
        print(f"{row['clients']} clients / {rows[0]['clients']}: {row['tokens_per_s'] / base:.2f}x the total tokens/s")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=2)
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
