"""The app's process-wide runtime settings: they hold while its lifespan runs, and no longer."""

from __future__ import annotations

import gc

from tests.conftest import scripted_app


async def test_full_collections_are_rarer_while_the_app_runs():
    before = gc.get_threshold()
    app, _ = scripted_app(gc_full_collection_every=before[2] + 37)
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == (before[0], before[1], before[2] + 37)
    assert gc.get_threshold() == before


async def test_no_gc_setting_leaves_the_interpreter_s_own():
    before = gc.get_threshold()
    app, _ = scripted_app(gc_full_collection_every=None)
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == before
    assert gc.get_threshold() == before
