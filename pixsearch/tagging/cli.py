"""`pixsearch tag`: tag the library with models, or edit and list tags by hand.

    pixsearch tag                              zero-shot tags with the library's dual encoder
    pixsearch tag --imagenet --ocr             the packaged ImageNet tagger and OCR (no zero-shot)
    pixsearch tag --zero-shot --imagenet --verify --entailer ofa-ve:DIR
    pixsearch tag --write-xmp                  merge the tags into XMP sidecars (dc:subject)
    pixsearch tag --add beach --image 12       a person's tag (confirmed; no model overwrites it)
    pixsearch tag --remove dog --image ~/p/x.jpg
    pixsearch tag --list [--image ID|PATH]

Like every command handler, this module may print; the work is done by the tagging service.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pixsearch.errors import ConfigError

ENTAILER_ENV = "PIXSEARCH_ENTAILER"


def register(commands: Any) -> None:
    """Add the `tag` sub-command to the CLI's sub-parsers."""
    from pixsearch.cli import add_common_options, add_wait_option

    tag = commands.add_parser(
        "tag",
        help="tag photos (zero-shot, ImageNet, OCR), check tags, write XMP sidecars, edit tags",
        description="Without options: zero-shot tags for every photo, with the library's own dual encoder.",
    )
    add_common_options(tag)
    add_wait_option(tag)
    models = tag.add_argument_group("tagging with models")
    models.add_argument("--zero-shot", action="store_true", help="tags from the vocabulary with the library's encoder")
    models.add_argument("--imagenet", action="store_true", help="the offline ImageNet classifier (packaged weights)")
    models.add_argument("--ocr", action="store_true", help="read text in photos (searchable, tag 'text')")
    models.add_argument("--vocabulary", type=Path, action="append", default=[], metavar="FILE",
                        help="more tags, one a line ('-tag' removes a built-in one); may be repeated")  # fmt: skip
    models.add_argument("--no-builtin-vocabulary", action="store_true", help="use only the --vocabulary files' tags")
    models.add_argument(
        "--z-min",
        type=float,
        help="zero-shot threshold in robust z-scores (default: from the vocabulary size, 4.1 for the built-in one)",
    )
    models.add_argument("--max-tags", type=int, help="at most this many zero-shot tags per photo (default 10)")
    models.add_argument(
        "--prompt-z",
        type=float,
        help="a zero-shot tag must beat background prompts on the photo by this z (default: calibrated on the model)",
    )
    models.add_argument(
        "--max-share",
        type=float,
        help="a zero-shot tag given to more than this share of the library is suspect and dropped (default 0.5)",
    )
    models.add_argument("--verify", action="store_true", help="drop model tags an entailment model contradicts")
    models.add_argument("--entailer", metavar="SPEC", help=f"entailment model for --verify (env {ENTAILER_ENV})")
    models.add_argument(
        "--contradiction", type=float, default=0.5, metavar="P", help="--verify drops a tag at this P(contradiction)"
    )
    models.add_argument("--new-only", action="store_true", help="only photos indexed since the last tagging")
    models.add_argument("--batch-size", type=int, help="photos decoded per batch (default 16)")
    xmp = tag.add_argument_group("XMP sidecars")
    xmp.add_argument("--write-xmp", action="store_true", help="merge tags into XMP sidecars (the photos are untouched)")
    xmp.add_argument("--import-xmp", action="store_true", help="keywords in existing sidecars become confirmed tags")
    xmp.add_argument("--xmp-naming", choices=["full", "stem"], default="full",
                     help="a new sidecar is photo.jpg.xmp (full, darktable/digiKam) or photo.xmp (stem, Lightroom)")  # fmt: skip
    xmp.add_argument("--confirmed-only", action="store_true", help="write only confirmed tags to sidecars")
    edit = tag.add_argument_group("editing by hand")
    actions = edit.add_mutually_exclusive_group()
    actions.add_argument("--add", metavar="NAME", help="add a tag (confirmed) to --image")
    actions.add_argument("--confirm", metavar="NAME", help="confirm a model's tag on --image")
    actions.add_argument("--remove", metavar="NAME", help="remove a tag from --image (no model adds it again)")
    actions.add_argument("--list", action="store_true", help="tags of --image, or tag counts of the library")
    edit.add_argument("--image", metavar="ID|PATH", help="the photo, by id or path")
    edit.add_argument("--json", action="store_true", help="machine-readable output")
    tag.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Any) -> int:
    """The handler of `pixsearch tag`."""
    from pixsearch.storage import Library

    library = Library.open(settings.library, settings.db_url)
    try:
        if args.add or args.confirm or args.remove or args.list:
            return _edit(args, library)
        return _tag(args, settings, library)
    finally:
        library.close()


def _edit(args: argparse.Namespace, library: Any) -> int:
    from pixsearch.cli import print_json
    from pixsearch.storage.annotations import tags_of
    from pixsearch.tagging.editing import edit_tag, find_image, tag_counts

    action = next((name for name in ("add", "confirm", "remove") if getattr(args, name)), None)
    if action and not args.image:
        raise ConfigError(f"--{action} needs --image ID|PATH")
    with library.session() as session:
        if action:
            row = find_image(session, args.image)
            changed = edit_tag(session, row.id, getattr(args, action), action)
            print_json(changed.to_json()) if args.json else print(f"{row.path}: {changed.name} {changed.state}")
            return 0
        if args.image:
            row = find_image(session, args.image)
            tags = tags_of(session, row.id)
            if args.json:
                print_json({"id": row.id, "path": row.path, "tags": [t.to_json() for t in tags]})
            for t in [] if args.json else tags:
                score = f"{t.score:.3f}" if t.score is not None else "-"
                print(f"{t.name:30s} {t.state:10s} {score:>6s}  {t.source}")
            return 0
        counts = tag_counts(session)
    if args.json:
        print_json([{"tag": n, "confirmed": c, "suggested": s} for n, c, s in counts])
    for name, confirmed, suggested in [] if args.json else counts:
        print(f"{confirmed + suggested:6d}  {name}  ({confirmed} confirmed, {suggested} suggested)")
    return 0


def options_from(args: argparse.Namespace, settings: Any) -> Any:
    from dataclasses import replace

    from pixsearch.tagging.service import TagOptions
    from pixsearch.tagging.zero_shot import ZeroShotOptions

    explicit = args.zero_shot or args.imagenet or args.ocr or args.verify or args.write_xmp or args.import_xmp
    zero_shot = ZeroShotOptions()
    if args.z_min is not None:
        zero_shot = replace(zero_shot, z_min=args.z_min)
    if args.max_tags is not None:
        zero_shot = replace(zero_shot, max_tags=args.max_tags)
    if args.prompt_z is not None:
        zero_shot = replace(zero_shot, prompt_z=args.prompt_z)
    if args.max_share is not None:
        zero_shot = replace(zero_shot, max_share=args.max_share)
    return TagOptions(
        zero_shot=args.zero_shot or not explicit,
        imagenet=args.imagenet,
        ocr=args.ocr,
        verify=args.verify,
        write_xmp=args.write_xmp,
        import_xmp=args.import_xmp,
        vocabulary_files=tuple(args.vocabulary),
        builtin_vocabulary=not args.no_builtin_vocabulary,
        zero_shot_options=zero_shot,
        entailer=args.entailer or os.environ.get(ENTAILER_ENV) or None,
        contradiction=args.contradiction,
        xmp_naming=args.xmp_naming,
        xmp_confirmed_only=args.confirmed_only,
        only_new=args.new_only,
        batch_size=args.batch_size or 16,
        max_pixels=settings.max_pixels,
    )


def _tag(args: argparse.Namespace, settings: Any, library: Any) -> int:
    from pixsearch.models import ModelOptions
    from pixsearch.tagging.service import TaggingService

    options = options_from(args, settings)
    service = TaggingService(library, options, ModelOptions(device=settings.device, dtype=settings.dtype))
    with _Bars() as bars:
        report = service.run(bars, lock_wait_s=args.wait)
    print_report(report)
    return 0


def print_report(report: Any) -> None:
    tagged = ", ".join(f"{count} by {source}" for source, count in report.tagged.items()) or "none"
    print(f"{report.images} photos; photos given tags: {tagged}")
    if report.ocr_found:
        print(f"text read in {report.ocr_found} photos")
    if report.checked:
        print(f"{report.checked} model tags checked, {len(report.dropped)} contradicted and dropped")
        for path, tag in report.dropped:
            print(f"  dropped {tag!r} from {path}")
    if report.xmp_written or report.xmp_unchanged or report.xmp_imported or report.xmp_removed:
        print(
            f"XMP: {report.xmp_written} sidecars written, {report.xmp_unchanged} already up to date, "
            f"{report.xmp_imported} keywords imported, {report.xmp_removed} tags removed in another program"
        )
    for path, reason in report.skipped:
        print(f"  skipped {path}: {reason}")


class _Bars:
    """One tqdm bar per phase, on stderr."""

    def __enter__(self) -> _Bars:
        self.bars: dict[str, Any] = {}
        return self

    def __call__(self, event: Any) -> None:
        from tqdm import tqdm

        bar = self.bars.get(event.phase)
        if bar is None:
            bar = self.bars[event.phase] = tqdm(desc=event.phase, unit="img", file=sys.stderr, dynamic_ncols=True)
        if event.total and bar.total != event.total:
            bar.total = event.total
        bar.update(event.done - bar.n)

    def __exit__(self, *_exc: object) -> None:
        for bar in self.bars.values():
            bar.close()
