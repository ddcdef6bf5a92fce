#!/usr/bin/env bash
# Seed 004, "Quick Start / Step 1: Set Up Organization and Team", verbatim except:
#   - the base URL http://localhost:8003 is $SAAS_API_BASE;
#   - each curl has one added line: -H "Authorization: Bearer $MASTER_KEY".
# tests/contract/test_seed_004.py runs it (and checks it against the seed when the seed is present).
# By hand: SAAS_API_BASE=http://127.0.0.1:8080 MASTER_KEY=... bash seed004_setup.sh

# seed-begin
# Create organization
curl -X POST $SAAS_API_BASE/api/organizations/create \
  -H "Authorization: Bearer $MASTER_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "organization_id": "org_acme",
    "name": "ACME Corporation"
  }'

# Create model access group
curl -X POST $SAAS_API_BASE/api/model-access-groups/create \
  -H "Authorization: Bearer $MASTER_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "group_name": "gpt-models",
    "description": "GPT models"
  }'

# Create team
curl -X POST $SAAS_API_BASE/api/teams/create \
  -H "Authorization: Bearer $MASTER_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "organization_id": "org_acme",
    "team_id": "acme-corp",
    "team_alias": "ACME Corp Team",
    "access_groups": ["gpt-models"],
    "credits_allocated": 1000
  }'
# seed-end
