"""Native mPLUG (Alibaba DAMO, as shipped in ModelScope), state-dict compatible with ModelScope's checkpoints.

Backends (`backends.py`): `MplugDualEncoder` (ITC towers), `MplugItmReranker` (ITM head),
`MplugAnswerer` (VQA) and `MplugCaptioner`; `pipeline.MplugPipeline` answers ModelScope-style calls.
Nothing here loads weights on import.
"""
