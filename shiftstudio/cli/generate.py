"""``shiftstudio generate``: stream text sampled from a trained run to stdout."""

from __future__ import annotations

import sys
import time

from shiftstudio.cli.options import checkpoint_options, Command, Option, UsageError, help_asked, parse

COMMAND = Command(
    name="generate",
    summary="Sample text from a run's model (or a Hugging Face GPT-2 folder) and stream it to stdout as it is generated.",
    usage="generate RUN_DIR|HF_FOLDER --prompt TEXT|- [--max_new_tokens N] [--temperature T] [--top_k K] [--top_p P] "
    "[--seed S] [--checkpoint latest|best|step-N] [--ema] [--speculative true|false] [--draft_tree N] [--stats] [--compare]",
    options=[
        Option("prompt", "text to continue; '-' reads it from stdin; empty starts a new document", default="", metavar="TEXT"),
        Option("max_new_tokens", "how many tokens to sample at most", kind="int", default=200, metavar="N"),
        Option("temperature", "randomness: 0 is greedy, 1 samples the model as it is", kind="float", default=0.8, metavar="T"),
        Option("top_k", "sample only among the K most likely tokens (0 = off)", kind="int", default=0, metavar="K"),
        Option("top_p", "sample only among the most likely tokens covering P of the probability (1 = off)",
               kind="float", default=1.0, metavar="P"),
        Option("repetition_penalty", "above 1 makes tokens already present less likely", kind="float", default=1.0, metavar="R"),
        Option("seed", "random seed: the same seed and settings give the same text (-1 = random)", kind="int", default=-1, metavar="S"),
        Option("stop", "stop when this text appears (not printed)", default="", metavar="TEXT"),
        *checkpoint_options("use the EMA weights of the checkpoint"),
        Option("device", "auto, cpu, cuda or mps", default="auto", metavar="DEV"),
        Option("speculative", "self-speculative decoding: heads 2..K draft, head 1 verifies (default: on when the "
               "model has shift >= 2 heads)", kind="bool", default=None),
        Option("draft_tree", "greedy speculative decoding verifies a tree of this many drafted tokens per pass "
               "(0 = one chain of top-1 drafts; sampling always verifies a chain)", kind="int", default=16, metavar="N"),
        Option("stats", "print tokens/s, the finish reason and accepted drafts per pass to stderr at the end", kind="bool",
               default=False),
        Option("compare", "also run plain decoding on the same prompt and settings and print the speed-up (and, when "
               "greedy, whether the text is identical) to stderr", kind="bool", default=False),
    ],
    positionals="RUN_DIR",
    min_positionals=1,
    max_positionals=1,
)


def run(name: str, argv: list[str]) -> int:
    if help_asked(COMMAND, argv):
        return 0
    values, positionals, _ = parse(COMMAND, argv)
    prompt = values["prompt"]
    if prompt == "-":
        prompt = sys.stdin.read()

    from shiftstudio.cli import error
    from shiftstudio.config import ConfigError
    from shiftstudio.core.errors import RunError
    from shiftstudio.core.generate.generation import Generation
    from shiftstudio.core.errors import GenerationError
    from shiftstudio.core.generate.filters import SamplingSettings
    from shiftstudio.core.runs.loading import load_any
    from shiftstudio.core.errors import TokenizerError

    try:
        settings = SamplingSettings(
            max_new_tokens=values["max_new_tokens"], temperature=values["temperature"], top_k=values["top_k"],
            top_p=values["top_p"], repetition_penalty=values["repetition_penalty"],
            seed=None if values["seed"] < 0 else values["seed"], stop=(values["stop"],) if values["stop"] else (),
        )
    except GenerationError as exc:
        raise UsageError(str(exc)) from None
    try:
        from shiftstudio.core.train.device import resolve_device

        device = resolve_device(values["device"])
        model, tokenizer, _ = load_any(positionals[0], values["checkpoint"], ema=values["ema"], device=device)
    except (RunError, ConfigError, TokenizerError, GenerationError, OSError) as exc:
        return error(str(exc), 1)
    speculative = values["speculative"]
    heads = model.config.shift
    if speculative and heads < 2:  # a setting this model cannot take: a usage error
        return error(f"speculative decoding needs a model with shift >= 2 heads; this one has {heads}", 2)
    if values["compare"] and not (speculative or (speculative is None and heads >= 2)):
        return error("--compare times speculative against plain decoding: it needs speculative decoding on "
                     f"(a model with shift >= 2 heads; this one has {heads})", 2)
    try:
        generation = Generation(model, tokenizer, prompt, settings, speculative=speculative,
                                draft_tree=values["draft_tree"])
    except GenerationError as exc:
        return error(str(exc), 2 if "draft_tree" in str(exc) else 1)

    out = sys.stdout
    start = time.perf_counter()
    first: float | None = None
    try:
        for token in generation:
            if first is None:
                first = time.perf_counter() - start
            if token.text:
                out.write(token.text)
                out.flush()
    except KeyboardInterrupt:
        generation.finish_reason = "interrupted"
    except BrokenPipeError:  # `| head` closed the pipe: not an error
        return 0
    out.write("\n")
    out.flush()
    seconds = time.perf_counter() - start
    n = generation.n_generated
    if values["stats"]:
        print(
            f"{n} tokens in {seconds:.2f}s ({n / max(seconds, 1e-9):.1f} tokens/s, first after {1000 * (first or 0):.0f} ms), "
            f"finished: {generation.finish_reason}, seed {generation.seed}",
            file=sys.stderr,
        )
        if generation.speculative:
            print(
                f"speculative: {generation.mean_accepted_per_pass:.2f} drafts accepted per pass "
                f"({n / max(generation.passes, 1):.2f} tokens per pass; passes by drafts accepted "
                f"{generation.stats.histogram_text()})",
                file=sys.stderr,
            )
    if values["compare"]:
        settings.seed = generation.seed  # the same seed, so sampled text is comparable in length too
        plain = Generation(model, tokenizer, prompt, settings, speculative=False)
        plain_start = time.perf_counter()
        for _ in plain:
            pass
        plain_seconds = time.perf_counter() - plain_start
        plain_rate, rate = plain.n_generated / max(plain_seconds, 1e-9), n / max(seconds, 1e-9)
        same = ""
        if settings.temperature == 0:
            same = ", same text" if plain.text == generation.text else ", TEXT DIFFERS"
        print(f"compare: plain {plain_rate:.1f} tokens/s, speculative {rate:.1f} tokens/s, "
              f"speed-up {rate / max(plain_rate, 1e-9):.2f}x{same}", file=sys.stderr)
    return 0
