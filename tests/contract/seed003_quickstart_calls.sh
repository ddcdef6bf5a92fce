#!/usr/bin/env bash
# Seed 003, "Quick Start / 2. Make LLM Calls", verbatim except:
#   - the base URL https://llm-saas.usegittie.com is $SAAS_API_BASE;
#   - each curl has one added line: -H "Authorization: Bearer $TEAM_KEY" (the team's virtual key).
# tests/contract/test_seed_003.py runs it (and checks it against the seed when the seed is present).
# By hand: SAAS_API_BASE=http://127.0.0.1:8080 TEAM_KEY=... bash seed003_quickstart_calls.sh

# seed-begin
# Create a job
JOB_ID=$(curl -s -X POST $SAAS_API_BASE/api/jobs/create \
  -H "Authorization: Bearer $TEAM_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "team_id": "team_engineering",
    "user_id": "user_123",
    "job_type": "document_analysis",
    "metadata": {"document_id": "doc_456"}
  }' | jq -r '.job_id')

# Make LLM call
curl -X POST "$SAAS_API_BASE/api/jobs/$JOB_ID/llm-call" \
  -H "Authorization: Bearer $TEAM_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "model_group": "ChatAgent",
    "messages": [
      {"role": "user", "content": "Analyze this document..."}
    ],
    "purpose": "initial_analysis"
  }'

# Complete job (deducts credit)
curl -X POST "$SAAS_API_BASE/api/jobs/$JOB_ID/complete" \
  -H "Authorization: Bearer $TEAM_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "status": "completed",
    "metadata": {"result": "success"}
  }'
# seed-end
