"""Tagging: zero-shot tags from the library's dual encoder, an offline ImageNet tagger, text in photos
(OCR), entailment checks of tags, and XMP sidecars.

Import from the modules (`pixsearch.tagging.service`, `.zero_shot`, `.xmp`, ...): this package imports
nothing itself, so building the CLI's parser (`pixsearch.tagging.cli`) stays free of torch.
"""
