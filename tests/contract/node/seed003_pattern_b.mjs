// Seed 003, "Direct OpenAI-Compatible Integration (Pattern B)": the Node.js example with the
// official `openai` npm package, verbatim between the seed-begin / seed-end marks
// (tests/contract/test_seed_003_pattern_b.py checks that against the seed). The only changes:
// the virtual key and the base URL come from the environment (SAAS_API_KEY, SAAS_LLM_BASE), where
// the seed writes 'sk-xxx...' and 'https://llm.usegittie.com', and the last line calls `chat()`,
// which the seed defines.
const API_KEY = process.env.SAAS_API_KEY;
const BASE_URL = process.env.SAAS_LLM_BASE;

// seed-begin
import OpenAI from 'openai';

const client = new OpenAI({
  apiKey: API_KEY,  // Your team's virtual key
  baseURL: BASE_URL  // LiteLLM proxy URL
});

async function chat() {
  const response = await client.chat.completions.create({
    model: 'gpt-3.5-turbo',  // Use model name from allowed_models
    messages: [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: 'Hello!' }
    ]
  });

  console.log(response.choices[0].message.content);
}
// seed-end

await chat();
