"""Shipped cards and gin configs are found in the checkout or in an installed copy."""

import sys

from scicot_jax import resources


def test_checkout_folders_are_found():
    assert (resources.resource_dir("tasks") / "synthetic_mc.toml").is_file()
    assert (resources.resource_dir("gin") / "models" / "tiny.gin").is_file()


def test_installed_copy_is_used_outside_a_checkout(tmp_path, monkeypatch):
    installed = tmp_path / "prefix" / "share" / "scicot_jax" / "tasks"
    installed.mkdir(parents=True)
    monkeypatch.setattr(resources, "_SOURCE_ROOT", tmp_path / "no_checkout")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    assert resources.resource_dir("tasks") == installed
    assert resources.resource_dir("gin") == tmp_path / "no_checkout" / "gin"
