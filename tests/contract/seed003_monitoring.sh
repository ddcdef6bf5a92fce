#!/usr/bin/env bash
# Seed 003, "Model Resolution API / Example Request" and "Monitoring & Analytics" (Check Team
# Usage, Track Credit Transactions), verbatim except:
#   - the base URL https://llm-saas.usegittie.com is $SAAS_API_BASE;
#   - each curl ends with an added -H "Authorization: Bearer $TEAM_KEY" (the team's virtual key).
# tests/contract/test_seed_003.py runs it. Note that the seed's period is the literal 2025-10.
# By hand: SAAS_API_BASE=http://127.0.0.1:8080 TEAM_KEY=... bash seed003_monitoring.sh

# seed-begin
curl "$SAAS_API_BASE/api/model-groups/ResumeAgent/resolve?team_id=team_engineering" -H "Authorization: Bearer $TEAM_KEY"
# seed-end

# seed-begin
# Get current month usage
curl "$SAAS_API_BASE/api/teams/team_engineering/usage?period=2025-10" -H "Authorization: Bearer $TEAM_KEY"
# seed-end

# seed-begin
curl "$SAAS_API_BASE/api/credits/teams/team_engineering/transactions?limit=10" -H "Authorization: Bearer $TEAM_KEY"
# seed-end
