#!/usr/bin/env python3
"""Checks a running `gpt serve` with the official `openai` Python package, used unchanged, and with raw HTTP (httpx,
which openai brings) where the client cannot express the request: models, completions (n, stop, logprobs, echo,
token-id prompts, seeds), chat, streaming, errors, the bounded queue (429) and client disconnects.

The server must run with --api-key KEY, --max-batch 4 and --max-queue 2 and serve a model whose context holds
1024 tokens (ServerTests starts one so).

usage: scripts/openai_client_check.py --base-url http://127.0.0.1:PORT --api-key KEY --model NAME
needs: pip install openai
"""
import argparse, concurrent.futures, json, re, sys, time, unittest

import httpx
import openai

ARGS = None


def client(key=None):
    return openai.OpenAI(base_url=ARGS.base_url + "/v1", api_key=key or ARGS.api_key, max_retries=0)


def metric(name):
    text = httpx.get(ARGS.base_url + "/metrics", headers={"Authorization": f"Bearer {ARGS.api_key}"}).text
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


class Models(unittest.TestCase):
    def test_list_and_retrieve(self):
        models = client().models.list()
        self.assertEqual([m.id for m in models.data], [ARGS.model])
        self.assertEqual(client().models.retrieve(ARGS.model).id, ARGS.model)
        with self.assertRaises(openai.NotFoundError):
            client().models.retrieve("no-such-model")

    def test_wrong_key_is_401(self):
        with self.assertRaises(openai.AuthenticationError):
            client("sk-wrong").models.list()


class Completions(unittest.TestCase):
    def complete(self, **fields):
        return client().completions.create(model=ARGS.model, **fields)

    def test_usage_and_length(self):
        c = self.complete(prompt="The quick brown fox", max_tokens=7, temperature=0)
        self.assertEqual(c.object, "text_completion")
        self.assertEqual(c.usage.prompt_tokens, 4)
        self.assertEqual(c.usage.completion_tokens, 7)
        self.assertEqual(c.usage.total_tokens, 11)
        self.assertEqual(c.choices[0].finish_reason, "length")

    def test_seeds_reproduce_and_n_differs(self):
        first = self.complete(prompt="Once upon a time", max_tokens=12, n=3, seed=7, temperature=1)
        again = self.complete(prompt="Once upon a time", max_tokens=12, n=3, seed=7, temperature=1)
        other = self.complete(prompt="Once upon a time", max_tokens=12, n=3, seed=8, temperature=1)
        texts = [c.text for c in first.choices]
        self.assertEqual([c.index for c in first.choices], [0, 1, 2])
        self.assertEqual(texts, [c.text for c in again.choices])
        self.assertNotEqual(texts, [c.text for c in other.choices])
        self.assertEqual(len(set(texts)), 3)

    def test_list_of_prompts_and_token_ids(self):
        tokens = httpx.post(ARGS.base_url + "/tokenize", json={"content": "Hello world"},
                            headers={"Authorization": f"Bearer {ARGS.api_key}"}).json()["tokens"]
        self.assertEqual(tokens, [15496, 995])
        by_text = self.complete(prompt=["Hello world", "Goodbye"], max_tokens=4, temperature=0)
        by_ids = self.complete(prompt=[tokens], max_tokens=4, temperature=0)
        self.assertEqual([c.index for c in by_text.choices], [0, 1])
        self.assertEqual(by_text.choices[0].text, by_ids.choices[0].text)
        back = httpx.post(ARGS.base_url + "/detokenize", json={"tokens": tokens},
                          headers={"Authorization": f"Bearer {ARGS.api_key}"}).json()
        self.assertEqual(back["content"], "Hello world")

    def test_stop_sequence(self):
        free = self.complete(prompt="a b c", max_tokens=20, temperature=0).choices[0].text
        if len(free) < 6:
            self.skipTest("the greedy completion is too short to cut")
        stop = free[3:5]
        cut = self.complete(prompt="a b c", max_tokens=20, temperature=0, stop=[stop, "never-there"]).choices[0]
        self.assertEqual(cut.finish_reason, "stop")
        self.assertEqual(cut.text, free[:free.index(stop)])

    def test_logprobs_and_echo(self):
        c = self.complete(prompt="Hello there", max_tokens=3, temperature=0, logprobs=2).choices[0]
        self.assertEqual(len(c.logprobs.tokens), 3)
        self.assertEqual(len(c.logprobs.top_logprobs[0]), 2)
        greedy_token = c.logprobs.tokens[0]
        top = c.logprobs.top_logprobs[0]
        self.assertEqual(max(top, key=top.get), greedy_token, "greedy picks the most likely token")
        self.assertAlmostEqual(c.logprobs.token_logprobs[0], top[greedy_token], places=5)
        # What lm-evaluation-harness sends: the prompt's own log-probabilities, nothing generated.
        e = self.complete(prompt="Hello there, friend", max_tokens=0, echo=True, logprobs=0).choices[0]
        self.assertEqual(e.text, "Hello there, friend")
        self.assertEqual(e.logprobs.tokens, ["Hello", " there", ",", " friend"])
        self.assertIsNone(e.logprobs.token_logprobs[0])
        self.assertTrue(all(x < 0 for x in e.logprobs.token_logprobs[1:]))
        self.assertEqual(e.logprobs.text_offset, [0, 5, 11, 12])
        # The echoed log-probability of a token equals the one it gets when generated after the same text.
        # (logit_bias forces " friend"; log-probabilities are the model's, before any sampling adjustment.)
        g = self.complete(prompt="Hello there,", max_tokens=1, temperature=0, logprobs=5, logit_bias={"1545": 100}).choices[0]
        self.assertEqual(g.logprobs.tokens, [" friend"])
        self.assertAlmostEqual(g.logprobs.token_logprobs[0], e.logprobs.token_logprobs[3], places=4)

    def test_streaming_equals_the_whole_response(self):
        whole = self.complete(prompt="In the beginning", max_tokens=16, temperature=0.8, seed=3).choices[0].text
        parts, finish, usage = [], None, None
        for chunk in self.complete(prompt="In the beginning", max_tokens=16, temperature=0.8, seed=3, stream=True,
                                   stream_options={"include_usage": True}):
            if chunk.choices:
                parts.append(chunk.choices[0].text)
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage
        self.assertEqual("".join(parts), whole)
        self.assertEqual(finish, "length")
        self.assertEqual(usage.completion_tokens, 16)

    def test_penalties_and_logit_bias(self):
        forced = self.complete(prompt="x", max_tokens=3, temperature=1, seed=1, logit_bias={"13": 100}).choices[0]
        self.assertEqual(forced.text, "...")
        banned = self.complete(prompt="x", max_tokens=3, temperature=0, logit_bias={"13": -100}, frequency_penalty=1.5,
                               presence_penalty=0.5).choices[0]
        self.assertNotIn(".", banned.text)


class Chat(unittest.TestCase):
    def chat(self, **fields):
        return client().chat.completions.create(model=ARGS.model, **fields)

    def test_chat_reply_usage_and_logprobs(self):
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
        r = self.chat(messages=messages, max_completion_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
        self.assertEqual(r.object, "chat.completion")
        choice = r.choices[0]
        self.assertEqual(choice.message.role, "assistant")
        self.assertIn(choice.finish_reason, ("stop", "length"))
        self.assertEqual(len(choice.logprobs.content[0].top_logprobs), 3)
        # "Be brief." + "\n\nHuman: Hi!" + "\n\nAssistant:" in GPT-2 tokens.
        self.assertEqual(r.usage.prompt_tokens, 13)

    def test_streamed_chat_equals_the_whole_reply(self):
        messages = [{"role": "user", "content": "Tell me a story."}]
        whole = self.chat(messages=messages, max_tokens=20, temperature=0.7, seed=11).choices[0].message.content
        roles, parts, finish = [], [], None
        for chunk in self.chat(messages=messages, max_tokens=20, temperature=0.7, seed=11, stream=True):
            self.assertEqual(chunk.object, "chat.completion.chunk")
            for c in chunk.choices:
                if c.delta.role:
                    roles.append(c.delta.role)
                parts.append(c.delta.content or "")
                finish = c.finish_reason or finish
        self.assertEqual(roles, ["assistant"])
        self.assertEqual("".join(parts), whole)
        self.assertIsNotNone(finish)


class Errors(unittest.TestCase):
    def test_unsupported_field_is_400_naming_it(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            client().completions.create(model=ARGS.model, prompt="x", max_tokens=1, extra_body={"best_of_n": 2})
        self.assertIn("best_of_n", str(caught.exception))
        self.assertEqual(caught.exception.body.get("param"), "best_of_n")

    def test_wrong_type_and_range(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            client().completions.create(model=ARGS.model, prompt="x", max_tokens=1, temperature=-1)
        self.assertEqual(caught.exception.body.get("param"), "temperature")
        with self.assertRaises(openai.BadRequestError):
            client().chat.completions.create(model=ARGS.model, messages=[{"role": "wizard", "content": "x"}])
        with self.assertRaises(openai.BadRequestError):
            client().chat.completions.create(model=ARGS.model, messages=[])

    def test_context_overflow(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            client().completions.create(model=ARGS.model, prompt=[[15496] * 1000], max_tokens=100)
        self.assertEqual(caught.exception.code, "context_length_exceeded")

    def test_unknown_model(self):
        with self.assertRaises(openai.NotFoundError):
            client().completions.create(model="gpt-4", prompt="x", max_tokens=1)


class Load(unittest.TestCase):
    def test_full_queue_answers_429_with_retry_after_and_everyone_else_is_served(self):
        # 4 slots and a queue of 2: of 12 long requests at once, at least 6 run or wait, the rest are refused.
        def post(_):
            return httpx.post(ARGS.base_url + "/v1/completions", timeout=120,
                              headers={"Authorization": f"Bearer {ARGS.api_key}"},
                              json={"model": ARGS.model, "prompt": "Count:", "max_tokens": 400, "temperature": 0})
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(post, range(12)))
        statuses = sorted(r.status_code for r in responses)
        self.assertTrue(set(statuses) <= {200, 429}, statuses)
        self.assertGreaterEqual(statuses.count(200), 6, statuses)
        self.assertGreaterEqual(statuses.count(429), 1, statuses)
        refused = next(r for r in responses if r.status_code == 429)
        self.assertIn("retry-after", refused.headers)
        self.assertEqual(refused.json()["error"]["code"], "queue_full")
        served = [r.json()["choices"][0]["text"] for r in responses if r.status_code == 200]
        self.assertEqual(len(set(served)), 1, "greedy completions of one prompt agree in any batch")

    def test_a_client_that_disconnects_frees_its_slot(self):
        headers = {"Authorization": f"Bearer {ARGS.api_key}"}
        body = {"model": ARGS.model, "prompt": "Go on:", "max_tokens": 900, "temperature": 0}
        start = time.time()
        whole = httpx.post(ARGS.base_url + "/v1/completions", json=body, headers=headers, timeout=120).json()
        full = time.time() - start
        self.assertEqual(whole["usage"]["completion_tokens"], 900)
        with httpx.stream("POST", ARGS.base_url + "/v1/completions", json=dict(body, stream=True), headers=headers, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    break
        left = time.time()
        while metric("gpt_batch_size") != 0 and time.time() - left < 10:
            time.sleep(0.01)
        self.assertEqual(metric("gpt_batch_size"), 0)
        self.assertLess(time.time() - left, full / 2, f"the abandoned generation left the batch early (the whole one takes {full:.2f} s)")


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", required=True)
    ARGS, rest = parser.parse_known_args()
    print(f"openai {openai.__version__} against {ARGS.base_url}")
    result = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2).result
    print("OK" if result.wasSuccessful() else "FAILED")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
