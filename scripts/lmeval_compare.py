#!/usr/bin/env python3
"""Runs lm-evaluation-harness and `gpt eval` on the same Hugging Face GPT-2 folder and the same examples of a
built-in task, and compares them example by example: log-likelihood of every choice (within --tolerance), acc and
acc_norm (identical), and throughput (examples/s of each, measured in this run).

At 0 shots both render the prompt themselves. At k shots lm-eval's sampler draws other demonstrations than
gpt eval's, so the prompts lm-eval rendered (its logged samples) are fed to `gpt eval` through a task whose
template is the single field {prompt} with a "choices" field: the scoring is compared on identical text.

With --server, lm-eval scores through `gpt serve` instead of transformers: its `local-completions` model (the OpenAI
completions API, prompts as token ids, `echo` with `logprobs`) against a server this script starts on a free port.

usage: scripts/lmeval_compare.py --model DIR|random-gpt2|random-gpt2-tiny --task sst2|rte|copa|mrpc [--limit N] [--shots K] [--server]
needs: pip install lm-eval (which brings torch and transformers)
"""
import argparse, contextlib, json, os, re, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# lm-eval task definitions equal to the project's built-in tasks (Sources/GPTEvaluation/Resources/tasks).
TASKS = {
    "sst2": dict(folder="sst2", doc_to_text="{{text}}\nQuestion: Is this sentence positive or negative?\nAnswer:",
                 doc_to_choice='{{[" negative", " positive"]}}'),
    "rte": dict(folder="rte", doc_to_text="{{premise}}\nQuestion: {{hypothesis}} True or False?\nAnswer:",
                doc_to_choice='{{[" True", " False"]}}'),
    "mrpc": dict(folder="mrpc",
                 doc_to_text="Sentence 1: {{text_a}}\nSentence 2: {{text_b}}\nQuestion: Do both sentences mean the same thing?\nAnswer:",
                 doc_to_choice='{{[" no", " yes"]}}'),
    "copa": dict(folder="copa",
                 doc_to_text="{{context.strip()[:-1]}} {{ {'cause': 'because', 'effect': 'so'}[question] }}",
                 doc_to_choice='{{ [" " + choices[0][0]|lower + choices[0][1:], " " + choices[1][0]|lower + choices[1][1:]] }}'),
}


def lmeval_yaml(name, spec, data_dir):
    choice = spec["doc_to_choice"]
    return "\n".join([
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    validation: {json.dumps(os.path.join(data_dir, 'dev.jsonl'))}",
        f"    train: {json.dumps(os.path.join(data_dir, 'train.jsonl'))}",
        "output_type: multiple_choice",
        "validation_split: validation",
        "fewshot_split: train",
        f"doc_to_text: {json.dumps(spec['doc_to_text'])}",
        f"doc_to_choice: {json.dumps(choice)}",
        "doc_to_target: \"{{label}}\"",
        "target_delimiter: \"\"",
        "fewshot_delimiter: \"\\n\\n\"",
        "metric_list:",
        "  - metric: acc",
        "  - metric: acc_norm",
        "",
    ])


def random_gpt2(directory, tiny):
    """GPT-2 small (or a tiny GPT-2 with its vocabulary) with random weights (seed 0) and GPT-2's tokenizer files."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=256) if tiny else GPT2Config()
    GPT2LMHeadModel(config).save_pretrained(directory)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(ROOT, "Sources/Tokenizers/Resources/gpt2", name), directory)


def hf_model(model, batch_size):
    from lm_eval.models.huggingface import HFLM
    return HFLM(pretrained=model, dtype="float32", batch_size=batch_size, device="cpu"), f"hf, batch size {batch_size}"


class Server:
    """`gpt serve` on a free loopback port, for as long as the `with` block runs."""

    def __init__(self, gpt, model):
        self.process = subprocess.Popen([gpt, "serve", "--model", model, "--port", "0", "--served-model-name", "swiftgpt"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        seen = ""
        while not (match := re.search(r"Serving .* on http://127\.0\.0\.1:(\d+)", seen)):
            line = self.process.stdout.readline()
            if not line:
                raise SystemExit(f"gpt serve did not start: {seen}")
            seen += line
        self.url = f"http://127.0.0.1:{match.group(1)}"

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.process.terminate()
        self.process.wait(timeout=60)


def server_model(url, model, batch_size):
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    with open(os.path.join(model, "config.json")) as f:
        context = json.load(f)["n_positions"]
    # lm-eval's API models keep max_length − 1 tokens of context + continuation (and ask for one more token), so
    # context + 1 fills the model's window. Where an example is longer, lm-eval conditions its API models on one
    # token less than HFLM (and gpt eval) do: compare on examples that fit.
    lm = LocalCompletionsAPI(base_url=url + "/v1/completions", model="swiftgpt", tokenizer_backend="huggingface",
                             tokenizer=model, batch_size=int(batch_size), num_concurrent=1, max_retries=1, max_length=context + 1)
    return lm, f"local-completions through gpt serve, {batch_size} prompts a request"


def run_lmeval(lm, task_dir, task, shots, limit):
    """lm-eval's figures, its per-example samples, and the seconds its model spent scoring (loglikelihood calls:
    tokenization and forward passes, as gpt eval's examples/s counts)."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    scoring = lm.loglikelihood
    spent = [0.0]

    def timed(*a, **k):
        start = time.time()
        try:
            return scoring(*a, **k)
        finally:
            spent[0] += time.time() - start
    lm.loglikelihood = timed
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=TaskManager(include_path=task_dir),
                                  num_fewshot=shots, limit=limit, log_samples=True, random_seed=0, numpy_random_seed=0,
                                  torch_random_seed=0, fewshot_random_seed=1234)
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    return out["results"][task], samples, spent[0]


def run_gpt(gpt, model, task, shots, limit, work, name):
    results, log = os.path.join(work, f"{name}.json"), os.path.join(work, f"{name}.jsonl")
    command = [gpt, "eval", "--model", model, "--task", task, "--shots", str(shots), "--output", results, "--log-samples", log]
    if limit:
        command += ["--limit", str(limit)]
    start = time.time()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.time() - start
    with open(results) as f:
        figures = json.load(f)
    with open(log) as f:
        samples = [json.loads(line) for line in f]
    return figures, samples, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Hugging Face GPT-2 folder, or random-gpt2 (GPT-2 small) or random-gpt2-tiny, random weights")
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--shots", type=int, default=0)
    parser.add_argument("--batch-size", default="8", help="lm-eval's batch size")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--gpt", default=os.path.join(ROOT, ".build/release/gpt"))
    parser.add_argument("--server", action="store_true", help="lm-eval scores through gpt serve (local-completions)")
    args = parser.parse_args()
    try:
        import lm_eval
    except ImportError:
        print("lm-eval is not installed (pip install lm-eval): skipping the comparison")
        return 0
    work = tempfile.mkdtemp(prefix="lmeval-compare-")
    try:
        model = args.model
        if model in ("random-gpt2", "random-gpt2-tiny"):
            random_gpt2(os.path.join(work, model), tiny=model.endswith("tiny"))
            model = os.path.join(work, model)
        task_dir = os.path.join(work, "tasks")
        os.makedirs(task_dir)
        name = f"swiftgpt_{args.task}"
        with open(os.path.join(task_dir, f"{name}.yaml"), "w") as f:
            f.write(lmeval_yaml(name, TASKS[args.task], os.path.join(ROOT, "data", TASKS[args.task]["folder"])))
        with Server(args.gpt, model) if args.server else contextlib.nullcontext() as server:
            lm, described = server_model(server.url, model, args.batch_size) if server else hf_model(model, args.batch_size)
            reference, ref_samples, ref_seconds = run_lmeval(lm, task_dir, name, args.shots, args.limit)
        if args.shots == 0:
            ours, our_samples, our_seconds = run_gpt(args.gpt, model, args.task, 0, args.limit, work, "gpt")
        else:
            # lm-eval's own prompts, scored by gpt eval through the {prompt} form.
            prompts = os.path.join(work, "prompts.jsonl")
            with open(prompts, "w") as f:
                for s in ref_samples:
                    f.write(json.dumps({"prompt": s["arguments"][0][0], "choices": [a[1] for a in s["arguments"]],
                                        "label": int(s["target"])}) + "\n")
            task_file = os.path.join(work, "prompts-task.json")
            with open(task_file, "w") as f:
                json.dump({"name": args.task, "output_type": "multiple_choice", "data": "prompts.jsonl", "template": "{prompt}",
                           "target_delimiter": "", "choices": "choices", "answer": "{label}"}, f)
            ours, our_samples, our_seconds = run_gpt(args.gpt, model, task_file, 0, None, work, "gpt")
        worst, mismatches = 0.0, 0
        for ref, our in zip(ref_samples, our_samples):
            ref_ll = [r[0][0] for r in ref["resps"]]
            worst = max(worst, max(abs(a - b) for a, b in zip(ref_ll, our["loglikelihoods"])))
            if args.shots == 0 and ref["arguments"][0][0] != our["prompt"]:
                mismatches += 1
                print("prompt differs:", json.dumps(ref["arguments"][0][0]), json.dumps(our["prompt"]))
            if ref["acc"] != (1.0 if our["prediction"] == our["gold"] else 0.0) or \
               ref["acc_norm"] != (1.0 if our["prediction_norm"] == our["gold"] else 0.0):
                mismatches += 1
                print(f"example {ref['doc_id']}: lm-eval acc {ref['acc']} acc_norm {ref['acc_norm']}, gpt eval predictions {our['prediction']} {our['prediction_norm']} (gold {our['gold']})")
        n = len(ref_samples)
        figures = {r["metric"]: r["value"] for r in ours["results"]}
        print(f"lm-eval {lm_eval.__version__} ({described}) vs gpt eval: {args.task}, {args.shots} shots, {n} examples")
        print(f"  acc      lm-eval {reference['acc,none']:.4f}   gpt eval {figures['acc']:.4f}")
        print(f"  acc_norm lm-eval {reference['acc_norm,none']:.4f}   gpt eval {figures['acc_norm']:.4f}")
        print(f"  largest log-likelihood difference {worst:.2e} (tolerance {args.tolerance:g}); {mismatches} examples differ")
        our_rate = ours["speed"][0]["examples_per_second"]
        print(f"  scoring speed: lm-eval {n / ref_seconds:.1f} examples/s, gpt eval {our_rate:.1f} examples/s "
              f"({our_rate / (n / ref_seconds):.2f}x); gpt eval's whole command {our_seconds:.1f} s with model loading")
        ok = len(ref_samples) == len(our_samples) and worst <= args.tolerance and mismatches == 0
        print("SAME" if ok else "DIFFERENT")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
