"""Statements shared by the repositories and the money writers, built once (storage/sql.py)."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from service.storage.schema import jobs, llm_calls
from service.storage.sql import prepared

SELECT_JOB = prepared(select(jobs).where(jobs.c.job_id == bindparam("p_job_id")))
SELECT_CALLS = prepared(
    select(llm_calls).where(llm_calls.c.job_id == bindparam("p_job_id")).order_by(llm_calls.c.id)
)
