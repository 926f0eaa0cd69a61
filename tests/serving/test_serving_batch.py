"""RaggedBatch: requests left-padded into one batch, with the masks and positions a prefill needs."""

import pytest
import torch

from autoprune import RaggedBatch, ReductionInputError


def row(P, V, Q, d=None):
    n = P + V + Q
    x = torch.arange(1, n + 1) if d is None else torch.randn(n, d)
    vm = torch.zeros(n, dtype=torch.bool)
    vm[P:P + V] = True
    return x, vm


def test_rows_are_left_padded_with_their_own_positions_and_query():
    (a, ma), (b, mb) = row(1, 3, 2), row(2, 1, 1)
    batch = RaggedBatch.from_rows([a, b], [ma, mb], pad_id=0)
    assert batch.length == 6 and batch.lengths == (6, 4) and batch.row_visual == (3, 1)
    assert batch.inputs[1].tolist() == [0, 0, 1, 2, 3, 4]
    assert batch.token_valid[1].tolist() == [False, False, True, True, True, True]
    assert batch.position_ids[1].tolist() == [0, 0, 0, 1, 2, 3]
    assert batch.query_mask[0].tolist() == [False] * 4 + [True] * 2
    assert batch.query_mask[1].tolist() == [False] * 5 + [True]
    assert batch.has_pads and batch.num_query == 2 and not batch.is_embeds


def test_embeddings_pad_with_zeros_and_padding_further_keeps_the_rows():
    (a, ma), (b, mb) = row(1, 3, 2, d=4), row(1, 3, 2, d=4)
    batch = RaggedBatch.from_rows([a, b], [ma, mb])
    assert batch.is_embeds and not batch.has_pads
    longer = batch.padded_to(9)
    assert longer.length == 9 and longer.has_pads
    assert torch.equal(longer.inputs[:, 3:], batch.inputs) and bool((longer.inputs[:, :3] == 0).all())
    assert longer.row_visual == batch.row_visual and longer.lengths == batch.lengths
    assert batch.padded_to(6) is batch


@pytest.mark.parametrize("make,match", [
    (lambda: ([row(1, 3, 2)[0]], [torch.zeros(6, dtype=torch.bool)]), "no visual"),
    (lambda: ([row(1, 3, 0)[0]], [row(1, 3, 0)[1]]), "no text after"),
    (lambda: ([row(1, 3, 2)[0]], [torch.ones(5, dtype=torch.bool)]), "visual mask of row 0"),
    (lambda: ([row(1, 3, 2)[0], row(1, 3, 2, d=4)[0]], [row(1, 3, 2)[1]] * 2), "row 1"),
    (lambda: ([], []), "at least one"),
])
def test_bad_rows_are_refused(make, match):
    rows, masks = make()
    with pytest.raises(ReductionInputError, match=match):
        RaggedBatch.from_rows(rows, masks)


def test_a_length_shorter_than_the_longest_row_is_refused():
    x, m = row(1, 3, 2)
    with pytest.raises(ReductionInputError, match="shorter"):
        RaggedBatch.from_rows([x], [m], length=5)


def test_a_batch_with_pads_after_real_tokens_cannot_be_built():
    (a, ma) = row(1, 3, 2)
    b = RaggedBatch.from_rows([a], [ma])
    with pytest.raises(ReductionInputError, match="left padding"):
        RaggedBatch(inputs=b.inputs, token_valid=torch.tensor([[True] * 5 + [False]]), visual_mask=b.visual_mask,
                    query_mask=b.query_mask, position_ids=b.position_ids)
