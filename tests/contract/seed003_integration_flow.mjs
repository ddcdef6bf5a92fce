// Seed 003, "Integration Flow / Recommended Integration Pattern", verbatim between the
// seed-begin / seed-end marks. Node 18+ (global fetch, top-level await in an ES module).
//
// The seed's snippet uses names it does not define (API_BASE, getCurrentUserId, taskId, document,
// documentContent): the lines before seed-begin define them, API_BASE from $SAAS_API_BASE. They
// also wrap fetch so that every request carries Authorization: Bearer $SAAS_API_KEY (the seed
// sends no key). No line of the seed changes.
//
// By hand: SAAS_API_BASE=http://127.0.0.1:8080 SAAS_API_KEY=sk-... node seed003_integration_flow.mjs

const API_BASE = process.env.SAAS_API_BASE;
const getCurrentUserId = () => 'user_123';
const taskId = 'task_123';
const document = { name: 'resume.pdf' };
const documentContent = 'Jane Doe. Ten years of Python.';

const seedFetch = globalThis.fetch;
globalThis.fetch = (url, options = {}) =>
  seedFetch(url, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${process.env.SAAS_API_KEY}` },
  });

// seed-begin
// 1. Initialize with team context
const teamId = "team_engineering";
const userId = getCurrentUserId();

// 2. Create job for tracking
const job = await fetch(`${API_BASE}/api/jobs/create`, {
  method: 'POST',
  headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({
    team_id: teamId,
    user_id: userId,
    job_type: 'document_analysis',
    metadata: {
      task_id: taskId,
      document_name: document.name
    }
  })
}).then(r => r.json());

const jobId = job.job_id;

try {
  // 3. Make one or more LLM calls
  const parseResult = await fetch(`${API_BASE}/api/jobs/${jobId}/llm-call`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      model_group: 'ResumeAgent',
      messages: [
        { role: 'system', content: 'You are a resume parser.' },
        { role: 'user', content: documentContent }
      ],
      purpose: 'parsing'
    })
  }).then(r => r.json());

  const analysisResult = await fetch(`${API_BASE}/api/jobs/${jobId}/llm-call`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      model_group: 'ResumeAgent',
      messages: [
        { role: 'user', content: 'Analyze: ' + parseResult.response.content }
      ],
      purpose: 'analysis'
    })
  }).then(r => r.json());

  // 4. Complete job successfully
  const completion = await fetch(`${API_BASE}/api/jobs/${jobId}/complete`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      status: 'completed',
      metadata: {
        result: 'success',
        calls_made: 2
      }
    })
  }).then(r => r.json());

  console.log(`Credits remaining: ${completion.costs.credits_remaining}`);

} catch (error) {
  // 5. Complete job as failed (no credit deduction)
  await fetch(`${API_BASE}/api/jobs/${jobId}/complete`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      status: 'failed',
      error_message: error.message
    })
  });
}
// seed-end
