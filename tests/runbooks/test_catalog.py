"""The versioned runbook store (SQLite under tmp_path) and loading a library folder."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator.runbooks import catalog
from services.orchestrator.runbooks.catalog import (
    DEFAULT_LIBRARY_DIR,
    LibrarySettings,
    RunbookExists,
    RunbookNotFound,
    library_dir,
    load_directory,
    load_library,
)
from services.orchestrator.runbooks.documents import RunbookDocument, RunbookInvalid
from shared.db import make_engine


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'catalog' / 'orchestrator.db'}")
    assert await catalog.init(engine) == [1]
    yield engine
    await engine.dispose()


def doc(runbook_id: str = "disk-full", title: str = "Disk full", **extra: Any) -> RunbookDocument:
    return RunbookDocument.model_validate(
        {
            "id": runbook_id,
            "title": title,
            "steps": {
                "main": [
                    {
                        "name": "df",
                        "connector": "ssh",
                        "connection": "{{ticket.host}}",
                        "command": "df -h",
                        **extra,
                    }
                ]
            },
        }
    )


async def test_init_is_idempotent(store: AsyncEngine) -> None:
    assert await catalog.init(store) == []


async def test_create_put_get_and_versions(store: AsyncEngine) -> None:
    first = await catalog.create(store, doc())
    assert (first.runbook_id, first.version, first.source) == ("disk-full", 1, "api")
    assert first.created_at.tzinfo is not None
    with pytest.raises(RunbookExists) as caught:
        await catalog.create(store, doc(title="Another"))
    assert caught.value.status == 409
    second = await catalog.put(store, "disk-full", doc(title="Disk full v2"))
    assert second.version == 2
    assert (await catalog.get(store, "disk-full")).document.title == "Disk full v2"
    assert (await catalog.get(store, "disk-full", 1)).document.title == "Disk full"
    assert [r.version for r in await catalog.versions(store, "disk-full")] == [1, 2]
    # The same content again stores nothing new: a retried PUT does not pile up versions.
    again = await catalog.put(store, "disk-full", doc(title="Disk full v2"))
    assert again.version == 2
    assert len(await catalog.versions(store, "disk-full")) == 2


async def test_get_missing_and_put_mismatch(store: AsyncEngine) -> None:
    with pytest.raises(RunbookNotFound) as caught:
        await catalog.get(store, "nope")
    assert caught.value.status == 404
    await catalog.create(store, doc())
    with pytest.raises(RunbookNotFound, match="version 9"):
        await catalog.get(store, "disk-full", 9)
    with pytest.raises(RunbookNotFound):
        await catalog.put(store, "other", doc("other"))
    with pytest.raises(RunbookInvalid, match="'disk-full' but the request is for 'other'"):
        await catalog.put(store, "other", doc())
    with pytest.raises(RunbookNotFound):
        await catalog.versions(store, "nope")


async def test_list_all_gives_the_latest_of_each(store: AsyncEngine) -> None:
    await catalog.create(store, doc("b-runbook", "B"))
    await catalog.create(store, doc("a-runbook", "A"))
    await catalog.put(store, "b-runbook", doc("b-runbook", "B2"))
    await catalog.put(store, "b-runbook", doc("b-runbook", "B3"))
    listed = await catalog.list_all(store)
    assert [(r.runbook_id, r.version, r.document.title) for r in listed] == [
        ("a-runbook", 1, "A"),
        ("b-runbook", 3, "B3"),
    ]


async def test_concurrent_puts_get_distinct_versions(store: AsyncEngine) -> None:
    await catalog.create(store, doc())
    results = await asyncio.gather(
        *(catalog.put(store, "disk-full", doc(title=f"T{i}")) for i in range(5))
    )
    assert sorted(r.version for r in results) == [2, 3, 4, 5, 6]


async def test_sync_library_versions_only_on_change(store: AsyncEngine) -> None:
    shipped = [doc("disk-full"), doc("bgp-down", "BGP down")]
    stored = await catalog.sync_library(store, shipped)
    assert [(r.runbook_id, r.version, r.source) for r in stored] == [
        ("disk-full", 1, "library"),
        ("bgp-down", 1, "library"),
    ]
    # Unchanged: nothing new (writing a default out is not a change either).
    again = await catalog.sync_library(
        store, [doc("disk-full", requires_approval=False), doc("bgp-down", "BGP down")]
    )
    assert [r.version for r in again] == [1, 1]
    # The shipped file changed: a new version.
    changed = await catalog.sync_library(store, [doc("disk-full", timeout_s=30)])
    assert changed[0].version == 2 and changed[0].source == "library"
    # An operator edits it; restarting with the same files keeps the operator's version.
    edited = await catalog.put(store, "disk-full", doc("disk-full", "Ours"))
    assert edited.version == 3
    kept = await catalog.sync_library(store, [doc("disk-full", timeout_s=30)])
    assert kept[0].version == 3 and kept[0].document.title == "Ours"
    # A new release of the file becomes the latest; the operator's edit stays in history.
    shipped_again = await catalog.sync_library(store, [doc("disk-full", timeout_s=45)])
    assert shipped_again[0].version == 4
    history = await catalog.versions(store, "disk-full")
    assert [(r.version, r.source) for r in history] == [
        (1, "library"),
        (2, "library"),
        (3, "api"),
        (4, "library"),
    ]


async def test_the_shipped_library_syncs_once(store: AsyncEngine) -> None:
    docs = await load_library(DEFAULT_LIBRARY_DIR)
    first = await catalog.sync_library(store, docs)
    assert {r.version for r in first} == {1}
    second = await catalog.sync_library(store, await load_library(DEFAULT_LIBRARY_DIR))
    assert {r.version for r in second} == {1}
    listed = await catalog.list_all(store)
    assert len(listed) == len(docs) >= 12
    disk = await catalog.get(store, "linux-disk-full")
    assert disk.document == next(d for d in docs if d.id == "linux-disk-full")


def test_library_dir_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CXM_RUNBOOKS_DIR", raising=False)
    assert library_dir() == DEFAULT_LIBRARY_DIR
    assert DEFAULT_LIBRARY_DIR.is_dir()
    monkeypatch.setenv("CXM_RUNBOOKS_DIR", str(tmp_path))
    assert library_dir() == tmp_path
    assert library_dir(LibrarySettings(runbooks_dir=tmp_path / "x")) == tmp_path / "x"


def write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data))


def test_load_directory_reads_yaml_and_json(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", doc("b-one").model_dump(mode="json"))
    (tmp_path / "a.json").write_text(doc("a-one").model_dump_json())
    write(tmp_path / "c.yml", doc("c-one").model_dump(mode="json"))
    (tmp_path / "README.md").write_text("not a runbook")
    assert [d.id for d in load_directory(tmp_path)] == ["a-one", "b-one", "c-one"]


def test_load_directory_names_the_bad_file(tmp_path: Path) -> None:
    shutil.copy(DEFAULT_LIBRARY_DIR / "linux-disk-full.yaml", tmp_path / "good.yaml")
    bad = doc("bad").model_dump(mode="json")
    bad["steps"]["main"][0]["timeout_s"] = -1
    write(tmp_path / "zz-bad.yaml", bad)
    with pytest.raises(RunbookInvalid) as caught:
        load_directory(tmp_path)
    assert caught.value.source == str(tmp_path / "zz-bad.yaml")
    assert str(caught.value) == (
        f'{tmp_path / "zz-bad.yaml"}: steps.main[0] (name "df").timeout_s: must be > 0'
    )


def test_load_directory_refuses_a_shared_id(tmp_path: Path) -> None:
    write(tmp_path / "one.yaml", doc("same").model_dump(mode="json"))
    write(tmp_path / "two.yaml", doc("same", "Other").model_dump(mode="json"))
    with pytest.raises(RunbookInvalid, match=r"two\.yaml: id: 'same' is also the id of one\.yaml"):
        load_directory(tmp_path)


def test_load_directory_of_nothing(tmp_path: Path) -> None:
    assert load_directory(tmp_path) == []
    with pytest.raises(RunbookInvalid, match="not a directory"):
        load_directory(tmp_path / "missing")
