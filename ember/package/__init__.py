"""The model package: a directory holding weights, a signature, metadata and a fixed sample.

This subpackage is the only reader and writer of the package format: the manifest
(``ember.json``, :mod:`.manifest`), the signature with named inputs and outputs of any dtype
and their dynamic axes (:mod:`.signature`), the ``torch.export`` program (:mod:`.program`), the
stored sample (:mod:`.sample`), saving (:mod:`.save`) and loading (:mod:`.load`). Export
targets and the server call these functions instead of reading the files themselves.
"""

from __future__ import annotations

from ember.package.cause import advice, first_line
from ember.package.describe import inspect_text
from ember.package.load import LoadedModel, load, register_architecture
from ember.package.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PROGRAM,
    SAMPLE,
    WEIGHTS,
    PackageError,
    is_listed_name,
    read_manifest,
    record_target,
    remove_target,
    remove_target_dir,
    sha256_file,
    verify_files,
    write_manifest,
)
from ember.package.program import load_program, save_program
from ember.package.sample import (
    MAX_SAMPLE_ROWS,
    load_named_sample,
    load_sample,
    load_samples,
    sample_shapes,
)
from ember.package.save import save
from ember.package.signature import dims_for_export, input_names

__all__ = [
    "register_architecture",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "MAX_SAMPLE_ROWS",
    "PROGRAM",
    "SAMPLE",
    "WEIGHTS",
    "LoadedModel",
    "PackageError",
    "advice",
    "dims_for_export",
    "first_line",
    "input_names",
    "inspect_text",
    "load",
    "load_named_sample",
    "load_program",
    "load_sample",
    "load_samples",
    "read_manifest",
    "record_target",
    "remove_target",
    "remove_target_dir",
    "save",
    "sample_shapes",
    "save_program",
    "is_listed_name",
    "sha256_file",
    "verify_files",
    "write_manifest",
]
