"""OFA's relative-position index tables.

These are the buffers ModelScope registers as `token_rp_bucket`, `image_rp_bucket` and
`image_position_idx`. They are pure functions of the config, so they are rebuilt here rather than
required from the checkpoint (checkpoints may or may not carry them).
"""

from __future__ import annotations

import math

import torch

# ModelScope builds the token table for 1024 positions whatever max_position_embeddings says.
TOKEN_TABLE_POSITIONS = 1024


def token_bucket_table(bucket_size: int, max_position: int = TOKEN_TABLE_POSITIONS) -> torch.Tensor:
    """[max_position, max_position] int64: bucket of (query i, key j).

    Offsets within +-bucket_size/2 keep their own bucket; farther ones share log-spaced buckets.
    """
    # the bucket depends only on the offset i - j: compute it once per offset, then index
    relative = torch.arange(-(max_position - 1), max_position, dtype=torch.long)
    sign = torch.sign(relative)
    mid = bucket_size // 2
    near = (relative < mid) & (relative > -mid)
    distance = torch.where(near, mid - 1, relative.abs())
    log_scale = math.log((max_position - 1) / mid)
    log_bucket = (torch.ceil(torch.log(distance / mid) / log_scale * (mid - 1)) + mid).int()
    by_offset = torch.where(distance.le(mid), relative, log_bucket * sign).long() + bucket_size - 1
    index = torch.arange(max_position)
    return by_offset[index[:, None] - index[None, :] + max_position - 1]


def image_bucket_count(bucket_size: int) -> int:
    """Rows of an image relative-position table: every 2-D offset plus three special entries."""
    return (2 * bucket_size - 1) ** 2 + 3


def image_bucket_table(bucket_size: int) -> torch.Tensor:
    """[bucket_size**2 + 1, bucket_size**2 + 1] int64: bucket of (query patch, key patch).

    Patch ids are row * bucket_size + col + 1; id 0 is a special slot whose row, column and corner
    use the last three buckets.
    """
    num_buckets = image_bucket_count(bucket_size)
    rows, cols = torch.meshgrid(torch.arange(bucket_size), torch.arange(bucket_size), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])  # [2, n]
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # [n, n, 2]
    row_offset = (relative[..., 0] + bucket_size - 1) * (2 * bucket_size - 1)
    col_offset = relative[..., 1] + bucket_size - 1
    size = bucket_size * bucket_size + 1
    table = torch.zeros(size, size, dtype=torch.long)
    table[1:, 1:] = row_offset + col_offset
    table[0, 0:] = num_buckets - 3
    table[0:, 0] = num_buckets - 2
    table[0, 0] = num_buckets - 1
    return table


def image_position_ids(height: int, width: int, bucket_size: int) -> torch.Tensor:
    """[height * width] ids of a row-major patch grid: row * bucket_size + col + 1."""
    return (torch.arange(width)[None, :] + torch.arange(height)[:, None] * bucket_size + 1).flatten()


def decoder_image_position_table(code_image_size: int, bucket_size: int) -> torch.Tensor:
    """The decoder's `image_position_idx` (used only when generating image codes): 0, the
    (code_image_size/8)^2 grid ids, then 768 entries of 1024."""
    window = code_image_size // 8
    grid = image_position_ids(window, window, bucket_size)
    return torch.cat([torch.tensor([0]), grid, torch.full((768,), 1024)])
