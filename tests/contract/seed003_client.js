// Seed 003, "Code Examples / Node.js Integration": the SaasLLMClient class and analyzeDocument,
// verbatim between the seed-begin / seed-end marks (tests/contract/test_seed_003.py checks that
// against the seed when the seed file is present). Node 18+ (global fetch).
//
// The only changes:
// - the base URL 'https://llm-saas.usegittie.com' is process.env.SAAS_API_BASE;
// - the seed sends no key: the lines before seed-begin wrap fetch so that every request carries
//   Authorization: Bearer $SAAS_API_KEY (no line of the seed changes);
// - the lines after seed-end run analyzeDocument(process.argv[2]).
//
// By hand: SAAS_API_BASE=http://127.0.0.1:8080 SAAS_API_KEY=sk-... node seed003_client.js "text"

const seedFetch = globalThis.fetch;
globalThis.fetch = (url, options = {}) =>
  seedFetch(url, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${process.env.SAAS_API_KEY}` },
  });

// seed-begin
class SaasLLMClient {
  constructor(baseUrl, teamId) {
    this.baseUrl = baseUrl;
    this.teamId = teamId;
  }

  async createJob(jobType, userId = null, metadata = {}) {
    const response = await fetch(`${this.baseUrl}/api/jobs/create`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        team_id: this.teamId,
        user_id: userId,
        job_type: jobType,
        metadata
      })
    });

    if (!response.ok) throw new Error(`Job creation failed: ${await response.text()}`);
    const data = await response.json();
    return data.job_id;
  }

  async llmCall(jobId, modelGroup, messages, options = {}) {
    const response = await fetch(`${this.baseUrl}/api/jobs/${jobId}/llm-call`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        model_group: modelGroup,
        messages,
        purpose: options.purpose,
        temperature: options.temperature || 0.7,
        max_tokens: options.maxTokens
      })
    });

    if (!response.ok) throw new Error(`LLM call failed: ${await response.text()}`);
    return await response.json();
  }

  async completeJob(jobId, status = 'completed', metadata = {}, errorMessage = null) {
    const response = await fetch(`${this.baseUrl}/api/jobs/${jobId}/complete`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        status,
        metadata,
        error_message: errorMessage
      })
    });

    if (!response.ok) throw new Error(`Job completion failed: ${await response.text()}`);
    return await response.json();
  }

  async getCredits() {
    const response = await fetch(`${this.baseUrl}/api/credits/teams/${this.teamId}/balance`);
    if (!response.ok) throw new Error(`Failed to get credits: ${await response.text()}`);
    return await response.json();
  }
}

// Usage
const client = new SaasLLMClient(
  process.env.SAAS_API_BASE,
  'team_engineering'
);

async function analyzeDocument(documentContent) {
  const jobId = await client.createJob('document_analysis', 'user_123', {
    document_id: 'doc_456'
  });

  try {
    const parseResult = await client.llmCall(
      jobId,
      'ResumeAgent',
      [
        { role: 'system', content: 'You are a resume parser.' },
        { role: 'user', content: documentContent }
      ],
      { purpose: 'parsing' }
    );

    const analysisResult = await client.llmCall(
      jobId,
      'ResumeAgent',
      [{ role: 'user', content: `Analyze: ${parseResult.response.content}` }],
      { purpose: 'analysis' }
    );

    const completion = await client.completeJob(jobId, 'completed', {
      result: 'success'
    });

    console.log(`Credits remaining: ${completion.costs.credits_remaining}`);
    return analysisResult.response.content;

  } catch (error) {
    await client.completeJob(jobId, 'failed', {}, error.message);
    throw error;
  }
}
// seed-end

analyzeDocument(process.argv[2]).then(
  (content) => console.log(`Analysis: ${content}`),
  (error) => {
    console.error(`analyzeDocument failed: ${error.message}`);
    process.exit(1);
  },
);
