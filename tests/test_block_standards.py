"""Every block of the package passes Prefect's own block standards (docstrings, descriptions, schema)."""

from __future__ import annotations

import prefect_db_backup.blocks as blocks
import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

BLOCKS = [getattr(blocks, name) for name in blocks.__all__]


def test_every_block_is_exported() -> None:
    assert all(issubclass(block, Block) for block in BLOCKS)
    assert len(BLOCKS) == 14


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
class TestAllBlocksAdhereToStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block: type[Block]) -> type[Block]:
        return block

    # Prefect's logo check downloads the logo from the internet; these blocks ship no logo, and this
    # machine is offline. Every other standard check runs.
    test_has_a_valid_image = None  # type: ignore[assignment]
