#!/usr/bin/env bash
# Seed 003, "Quick Start / 1. Set Up Organization & Team", verbatim except:
#   - the base URL https://llm-saas.usegittie.com is $SAAS_API_BASE;
#   - each curl has one added line: -H "Authorization: Bearer $MASTER_KEY";
#   - the models are simulator/gpt-3.5-turbo and simulator/gpt-4 (the built-in simulator: no
#     provider API key needed), not gpt-3.5-turbo and gpt-4.
# tests/contract/test_seed_003.py runs it (and checks it against the seed when the seed is present).
# By hand: SAAS_API_BASE=http://127.0.0.1:8080 MASTER_KEY=... bash seed003_quickstart_setup.sh

# seed-begin
# Create organization
curl -X POST $SAAS_API_BASE/api/organizations/create \
  -H "Authorization: Bearer $MASTER_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "organization_id": "org_your_company",
    "name": "Your Company",
    "metadata": {"tier": "premium"}
  }'

# Create model groups
curl -X POST $SAAS_API_BASE/api/model-groups/create \
  -H "Authorization: Bearer $MASTER_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "group_name": "ChatAgent",
    "display_name": "Chat Agent",
    "description": "General purpose chat",
    "models": [
      {"model_name": "simulator/gpt-3.5-turbo", "priority": 0},
      {"model_name": "simulator/gpt-4", "priority": 1}
    ]
  }'

# Create team with credits
curl -X POST $SAAS_API_BASE/api/teams/create \
  -H "Authorization: Bearer $MASTER_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "organization_id": "org_your_company",
    "team_id": "team_engineering",
    "team_alias": "Engineering Team",
    "model_groups": ["ChatAgent"],
    "credits_allocated": 1000,
    "metadata": {"department": "engineering"}
  }'
# seed-end
