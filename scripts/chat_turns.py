#!/usr/bin/env python3
"""Time to first token of each turn of a chat, with and without the server's prompt cache: one client holds a
conversation of --turns turns, each prompt the whole conversation so far (earlier messages and replies) and a new
message, sent as text to /v1/completions and streamed (greedy, --max-tokens a reply). Runs `gpt serve` with
--cache-bytes 0 (off) and with its default cache, and with --llama-server BIN --gguf FILE also llama-server with
"cache_prompt" false and true, on the same prompts. Reports each turn's prompt tokens and time to first token, the
replies' agreement between the runs, and `gpt serve`'s /metrics hit ratio (prompt tokens from the cache / prompt
tokens).

Without --model it makes GPT-2 124M with random weights, as scripts/serve_load.py does.

usage: scripts/chat_turns.py [--model DIR] [--turns 10] [--max-tokens 48] [--llama-server BIN --gguf FILE]
needs: pip install httpx
"""
import argparse, json, os, re, sys, tempfile, time

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_load import ROOT, make_model, start_llama_server, start_server  # noqa: E402


def messages(turns):
    """--turns user messages: consecutive lines of Tiny Shakespeare, about 30 tokens each."""
    lines = [line for line in open(os.path.join(ROOT, "data/tinyshakespeare/input.txt")).read().split("\n") if line.strip()]
    result, at = [], 1000
    for _ in range(turns):
        text = ""
        while len(text) < 120:
            text += (" " if text else "") + lines[at].strip()
            at += 1
        result.append(text)
    return result


def chat(url, turns, max_tokens, extra):
    """Holds the conversation; returns each turn's (prompt tokens, seconds to the first token, reply)."""
    history, rows = "", []
    for message in messages(turns):
        # A connection a turn: llama-server's HTTP library closes kept-alive connections after a few requests.
        with httpx.Client(timeout=600) as http:
            history += f"\n\nHuman: {message}\n\nAssistant:"
            body = {"model": "chat", "prompt": history, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True}, "logit_bias": {"50256": -100}} | extra
            start, first, reply, prompt_tokens = time.monotonic(), None, "", None
            with http.stream("POST", url + "/v1/completions", json=body) as response:
                if response.status_code != 200:
                    raise SystemExit(f"HTTP {response.status_code}: {response.read()[:300]!r}")
                for line in response.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    event = json.loads(line[6:])
                    if event.get("usage"):
                        prompt_tokens = event["usage"]["prompt_tokens"]
                    for choice in event.get("choices", []):
                        if choice.get("text"):
                            first = first or time.monotonic() - start
                            reply += choice["text"]
            rows.append((prompt_tokens, first, reply))
            history += reply
    return rows


def metric(url, name):
    text = httpx.get(url + "/metrics", timeout=10).text
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpt", default=os.path.join(ROOT, ".build/release/gpt"))
    parser.add_argument("--model", help="model directory (default: GPT-2 124M with random weights)")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens of each reply")
    parser.add_argument("--llama-server", help="also run this llama-server binary, on --gguf")
    parser.add_argument("--gguf", help="the GGUF file llama-server serves")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="llama-server's -t")
    args = parser.parse_args()
    print(f"1-minute load average before: {os.getloadavg()[0]:.2f}", flush=True)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="chat-turns-") as work:
        model = args.model or make_model(args.gpt, work)
        for name, cache_bytes in [("gpt serve, no cache", "0"), ("gpt serve, cache", None)]:
            process, url = start_server(args.gpt, model, 4, ["--served-model-name", "chat"]
                                        + (["--cache-bytes", cache_bytes] if cache_bytes else []))
            try:
                runs[name] = chat(url, args.turns, args.max_tokens, {})
                if cache_bytes is None:
                    cached, total = metric(url, "gpt_prompt_cached_tokens_total"), metric(url, "gpt_prompt_tokens_total")
                    hit = f"/metrics: {cached:.0f} of {total:.0f} prompt tokens from the cache, hit ratio {cached / total:.3f}; "
                    hit += f"gpt_prompt_cache_bytes {metric(url, 'gpt_prompt_cache_bytes'):.0f}"
            finally:
                process.terminate()
                process.wait(timeout=120)
        if args.llama_server:
            if not args.gguf:
                raise SystemExit("--llama-server needs --gguf")
            process, url = start_llama_server(args.llama_server, args.gguf, 1, args.threads)
            try:
                for cache in (False, True):
                    runs[f"llama-server, cache_prompt {str(cache).lower()}"] = chat(url, args.turns, args.max_tokens, {"cache_prompt": cache})
            finally:
                process.terminate()
                process.wait(timeout=120)
    names = list(runs)
    print("time to first token, ms, per turn (prompt tokens as gpt serve counts them)")
    print("turn | prompt tokens | " + " | ".join(names))
    for turn in range(args.turns):
        print(f"{turn + 1} | {runs[names[0]][turn][0]} | " + " | ".join(f"{runs[n][turn][1] * 1000:.0f}" for n in names))
    for n in names:
        times = [row[1] for row in runs[n]]
        print(f"{n}: turns 2-{args.turns} total {sum(times[1:]) * 1000:.0f} ms, mean {sum(times[1:]) / (len(times) - 1) * 1000:.0f} ms")
    for n in names[1:]:
        same = sum(a[2] == b[2] for a, b in zip(runs[names[0]], runs[n]))
        print(f"replies equal to '{names[0]}': {n}: {same} of {args.turns} turns")
    print(hit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
