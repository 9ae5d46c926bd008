"""The project manifest, `<project>/mpltool.yaml`: the one record every stage reads and writes.

Schema (version 1)::

    schema: 1
    created: 2026-11-24T01:44:00Z          # UTC, ISO 8601
    stages:
      <stage>:                             # data | train | eval | freeze | convert
        status: running | done | failed | interrupted
        started: <UTC>            ended: <UTC>
        host: <hostname>          pid: <int>
        argv: [mpltool, ...]      error: <one line, when failed>
        versions: {mpltool, python, tensorflow, numpy, npu_bridge, cann}
        git: {commit, dirty}      # of the project directory, when it is a git work tree
        params: {...}             # the resolved parameters of the stage
        params_hash: <sha256 of the canonical JSON of params>
        inputs:  {<name>: {path, size, sha256}}   # paths relative to the project directory
        outputs: {<name>: {path, size, sha256}}
        metrics: {...}
        ...                       # stage-specific keys (split, checkpoints, io, parity, command, ...)

    pending:                      # only between a commit's manifest write and its renames (see below)
      - {from: <staged file>, to: <final path>, sha256}

Why it is built this way: a crash must never leave half a manifest (atomic temp + fsync + rename), two
stages of one project must never write at once (an exclusive lock file naming its holder), and a stage
must refuse inputs that changed since the stage before recorded them (sha256 on every file).

The package, by job: project.py (the directory, reading and validating the manifest, the files stages
record, writing records), files.py (atomic writes, sha256, the walk over a record's files and their
check), lock.py (one writer at a time), commit.py (how a stage run becomes a record and its outputs land),
provenance.py (times, versions, git, the
parameters' hash).

Which files a stage may write (`Project.check_writable`): never the manifest or its lock, never a file
that another stage recorded as an input or output, and an existing file that no stage recorded only
with --force.
"""

from mpltool.manifest.commit import STAGING_DIR, StageRun
from mpltool.manifest.project import LOCK_NAME, MANIFEST_NAME, SCHEMA_VERSION, STATUSES, Project

__all__ = ["LOCK_NAME", "MANIFEST_NAME", "SCHEMA_VERSION", "STAGING_DIR", "STATUSES", "Project", "StageRun"]
