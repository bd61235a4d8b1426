"""Answers in sentences: a captioner describes the photo, a VQA model proposes answers with
probabilities, and a language model (a `Writer`) writes the most plausible answer from the three,
as the VLE model card describes ("VQA + LLM").

The prompt is a template with three fields, `{caption}`, `{question}` and `{candidates}` (one
"answer (probability)" per line, best first); `--prompt-file` replaces `DEFAULT_TEMPLATE`. Every
piece is bounded: the caption and question in characters, the candidates in number, the whole
prompt in characters (the writer bounds it again in tokens), the answer in new tokens and seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from pixsearch.errors import ConfigError
from pixsearch.models.roles import Answerer, Captioner, Writer

DEFAULT_TEMPLATE = """\
You answer questions about a photo you cannot see, from what two vision models say about it.
A captioning model describes the photo: {caption}
A question-answering model was asked: {question}
Its most likely answers, with probabilities:
{candidates}
Reply with the most plausible answer to the question, in a few words.
Answer:"""

FIELDS = ("caption", "question", "candidates")


@dataclass(frozen=True)
class AnsweringOptions:
    """Limits of one written answer. `top_k` candidates go into the prompt."""

    top_k: int = 5
    max_caption_chars: int = 300
    max_question_chars: int = 300
    max_prompt_chars: int = 2000
    max_new_tokens: int = 32
    timeout_s: float = 30.0
    template: str = DEFAULT_TEMPLATE

    def check(self) -> None:
        """Raises ConfigError naming the bad value."""
        check_template(self.template)
        if not 1 <= self.top_k <= 20:
            raise ConfigError(f"top_k must be between 1 and 20, got {self.top_k}")
        if not 1 <= self.max_new_tokens <= 512:
            raise ConfigError(f"max new tokens must be between 1 and 512, got {self.max_new_tokens}")
        if self.timeout_s <= 0:
            raise ConfigError(f"the writer's timeout must be positive, got {self.timeout_s}")


@dataclass(frozen=True)
class WrittenAnswer:
    """The written answer and its evidence: the VQA candidates and the caption the prompt held."""

    question: str
    answer: str
    candidates: list[tuple[str, float]]
    caption: str
    prompt: str = field(repr=False)


def check_template(template: str) -> str:
    """The template, if it names only the known fields and at least the question; else ConfigError."""
    import string

    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ConfigError(f"prompt template does not parse ({error}); write literal braces as {{{{ }}}}") from error
    unknown = names - set(FIELDS)
    if unknown:
        raise ConfigError(f"prompt template names unknown fields {sorted(unknown)}; known: {', '.join(FIELDS)}")
    if "question" not in names:
        raise ConfigError("prompt template must hold {question}")
    return template


def read_template(path: Path) -> str:
    """A prompt template from a file (UTF-8), checked."""
    try:
        return check_template(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read prompt file {path}: {error.strerror}") from error


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def format_candidates(candidates: list[tuple[str, float]]) -> str:
    return "\n".join(f"- {answer} ({prob:.2f})" for answer, prob in candidates) or "- (none)"


def build_prompt(caption: str, question: str, candidates: list[tuple[str, float]], options: AnsweringOptions) -> str:
    """The filled template; candidates are dropped from the end until it fits `max_prompt_chars`.

    Raises:
        ConfigError: the template alone (with caption and question) is longer than the limit.
    """
    caption = _clip(caption, options.max_caption_chars)
    question = _clip(question, options.max_question_chars)
    kept = list(candidates[: options.top_k])
    while True:
        prompt = options.template.format(caption=caption, question=question, candidates=format_candidates(kept))
        if len(prompt) <= options.max_prompt_chars:
            return prompt
        if not kept:
            raise ConfigError(
                f"the prompt is {len(prompt)} characters even without candidates; the limit is "
                f"{options.max_prompt_chars} (shorten the template)"
            )
        kept.pop()


def clean_answer(text: str, limit: int = 500) -> str:
    """The writer's first non-empty line, without a leading 'Answer:' it may repeat."""
    for line in text.splitlines():
        line = line.strip()
        if line.lower().startswith("answer:"):
            line = line[len("answer:") :].strip()
        if line:
            return line[:limit]
    return ""


def final_answer(completion: str, candidates: list[tuple[str, float]]) -> str:
    """The cleaned completion; if that is blank, the best candidate, so the answer is never blank."""
    return clean_answer(completion) or (candidates[0][0] if candidates else "")


def write_answer(
    caption: str,
    question: str,
    candidates: list[tuple[str, float]],
    writer: Writer,
    options: AnsweringOptions,
) -> WrittenAnswer:
    """The writer's answer from a caption and VQA candidates already at hand."""
    prompt = build_prompt(caption, question, candidates, options)
    text = final_answer(writer.write(prompt, options.max_new_tokens, options.timeout_s), candidates)
    return WrittenAnswer(question, text, list(candidates[: options.top_k]), caption, prompt)


def ask(
    image: Image.Image,
    question: str,
    answerer: Answerer,
    captioner: Captioner,
    writer: Writer,
    options: AnsweringOptions,
) -> WrittenAnswer:
    """Caption the photo, ask the VQA model, and have the writer answer from both."""
    caption = captioner.caption([image])[0]
    candidates = answerer.answer(image, question, options.top_k)
    return write_answer(caption, question, candidates, writer, options)
