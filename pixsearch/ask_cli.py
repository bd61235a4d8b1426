"""`pixsearch ask`: ask a photo a question.

    pixsearch ask photo.jpg "what is on the table?" --answerer blip-vqa:DIR
    pixsearch ask photo.jpg "what is on the table?" --answerer blip-vqa:DIR --captioner blip-caption:DIR \\
        --llm openai-api:http://localhost:11434/v1#llama3.2:1b

Without --llm: the VQA model's top answers with probabilities. With it: the caption, the question
and those answers go into a prompt (`--prompt-file` replaces the built-in one, see
`pixsearch.answering.DEFAULT_TEMPLATE`) and the language model writes the answer; the candidates and
the caption are shown beneath it. Model specs default to PIXSEARCH_ANSWERER, PIXSEARCH_CAPTIONER and
PIXSEARCH_WRITER, as for `pixsearch serve`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pixsearch.errors import ConfigError

ENV = {"answerer": "PIXSEARCH_ANSWERER", "captioner": "PIXSEARCH_CAPTIONER", "llm": "PIXSEARCH_WRITER"}


def register(commands: Any) -> None:
    """Add the `ask` sub-command to the CLI's sub-parsers."""
    from pixsearch.cli import add_common_options

    ask = commands.add_parser(
        "ask", help="ask a photo a question (VQA; with --llm, an answer written by a language model)"
    )
    add_common_options(ask)
    ask.add_argument("photo", type=Path)
    ask.add_argument("question")
    ask.add_argument("--answerer", metavar="SPEC", help=f"VQA model (env {ENV['answerer']})")
    ask.add_argument("--captioner", metavar="SPEC", help=f"captioning model, needed by --llm (env {ENV['captioner']})")
    ask.add_argument(
        "--llm",
        metavar="SPEC",
        help=f"language model that writes the answer: llm:DIR or openai-api:URL#MODEL (env {ENV['llm']})",
    )
    ask.add_argument("--no-llm", action="store_true", help="the bare VQA answers, even if PIXSEARCH_WRITER is set")
    ask.add_argument("--prompt-file", type=Path, help="prompt template with {caption}, {question}, {candidates}")
    ask.add_argument("--top-k", type=int, default=5, help="VQA answers shown and put in the prompt (default 5)")
    ask.add_argument("--max-new-tokens", type=int, default=32, help="longest written answer, in tokens (default 32)")
    ask.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="writer's time limit (default 30)")
    ask.add_argument("--show-prompt", action="store_true", help="also print the prompt given to the language model")
    ask.add_argument("--json", action="store_true", help="machine-readable output")
    ask.set_defaults(handler=run)


def _spec(args: argparse.Namespace, name: str) -> str | None:
    return getattr(args, name) or os.environ.get(ENV[name]) or None


def run(args: argparse.Namespace, settings: Any) -> int:
    """The handler of `pixsearch ask`."""
    from pixsearch import answering
    from pixsearch.cli import print_json
    from pixsearch.imageio import load_image
    from pixsearch.models import ModelOptions, Role, create

    answerer_spec = _spec(args, "answerer")
    if answerer_spec is None:
        raise ConfigError(f"name a VQA model: --answerer SPEC (or {ENV['answerer']})")
    writer_spec = None if args.no_llm else _spec(args, "llm")
    captioner_spec = _spec(args, "captioner")
    if writer_spec and not captioner_spec:
        raise ConfigError(f"--llm needs a captioner: --captioner SPEC (or {ENV['captioner']})")
    options = answering.AnsweringOptions(
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        timeout_s=args.timeout,
        template=answering.read_template(args.prompt_file) if args.prompt_file else answering.DEFAULT_TEMPLATE,
    )
    options.check()
    models = ModelOptions(device=settings.device, dtype=settings.dtype)
    answerer = create(answerer_spec, Role.ANSWERER, models)
    writer = create(writer_spec, Role.WRITER, models) if writer_spec else None  # a bad spec fails before loading
    captioner = create(captioner_spec, Role.CAPTIONER, models) if writer_spec else None
    image = load_image(args.photo, settings.max_pixels)
    for model in (answerer, captioner, writer):
        if model is not None:
            model.load()
    if writer is None:
        candidates = answerer.answer(image, args.question, options.top_k)
        out: dict[str, Any] = {"question": args.question, "answers": candidates, "answerer": answerer_spec}
        if args.json:
            print_json({**out, "answers": [{"answer": a, "probability": p} for a, p in candidates]})
        else:
            for answer, prob in candidates:
                print(f"{prob:6.3f}  {answer}")
        return 0
    result = answering.ask(image, args.question, answerer, captioner, writer, options)
    if args.json:
        print_json(
            {
                "question": result.question,
                "answer": result.answer,
                "candidates": [{"answer": a, "probability": p} for a, p in result.candidates],
                "caption": result.caption,
                "models": {"answerer": answerer_spec, "captioner": captioner_spec, "writer": writer_spec},
                **({"prompt": result.prompt} if args.show_prompt else {}),
            }
        )
        return 0
    print(result.answer)
    print("why this answer:")
    print(f"  caption ({captioner_spec}): {result.caption}")
    print(f"  VQA answers ({answerer_spec}): " + ", ".join(f"{a} {p:.2f}" for a, p in result.candidates))
    print(f"  written by {writer_spec}")
    if args.show_prompt:
        print("prompt:\n" + result.prompt)
    return 0
