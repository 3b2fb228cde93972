// openai_client.mjs - the frontend through the official `openai` npm client.
//   node openai_client.mjs <base-url> <model> <mode>
// mode "scripted": workers play known answers (magneto-scripted-worker), so reasoning_content,
// content and a tool call are checked exactly. mode "mocker" / "cpu": real engines, whose text
// is not known in advance: shapes, usage and exact lengths (ignore_eos) are checked.
// Prints one line per check and exits non-zero when any failed.
import OpenAI from 'openai';

const [baseURL, model, mode] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
const scripted = mode === 'scripted';
let failed = 0, passed = 0;
function check(cond, what, detail) {
  if (cond) { passed++; return; }
  failed++;
  console.log(`FAIL: ${what}${detail !== undefined ? ': ' + JSON.stringify(detail) : ''}`);
}

async function main() {
  const models = await client.models.list();
  check(models.data.some((m) => m.id === model), 'models.list has the model', models.data);

  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello there' }];

  // Chat, not streamed.
  const c = await client.chat.completions.create({ model, messages, max_tokens: 64 });
  const m = c.choices[0].message;
  check(c.object === 'chat.completion' && c.id.startsWith('chatcmpl-'), 'chat object and id', c.id);
  check(c.usage.prompt_tokens > 0 && c.usage.completion_tokens > 0, 'chat usage', c.usage);
  check(c.usage.total_tokens === c.usage.prompt_tokens + c.usage.completion_tokens, 'total_tokens');
  if (scripted) {
    check(m.content === 'Hello! How can I help you today?', 'chat content', m.content);
    check(m.reasoning_content === 'The user says hello. Respond in kind.', 'reasoning_content', m.reasoning_content);
    check(c.choices[0].finish_reason === 'stop', 'chat finish stop', c.choices[0].finish_reason);
  } else {
    check(typeof m.content === 'string' && m.content.length + (m.reasoning_content || '').length > 0, 'chat text', m);
  }

  // Chat, streamed, with usage.
  const st = await client.chat.completions.create({
    model, messages, max_tokens: 64, stream: true, stream_options: { include_usage: true },
  });
  let content = '', reasoning = '', finish = null, usage = null, role = null, chunks = 0;
  for await (const ch of st) {
    chunks++;
    check(ch.object === 'chat.completion.chunk', 'chunk object');
    if (ch.usage) usage = ch.usage;
    const d = ch.choices[0]?.delta;
    if (d?.role) role = d.role;
    if (d?.content) content += d.content;
    if (d?.reasoning_content) reasoning += d.reasoning_content;
    if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
  }
  check(role === 'assistant', 'stream role');
  check(usage && usage.completion_tokens > 0 && usage.prompt_tokens > 0, 'stream usage', usage);
  check(finish === 'stop' || finish === 'length', 'stream finish', finish);
  if (scripted) {
    check(content === 'Hello! How can I help you today?', 'stream content', content);
    check(reasoning === 'The user says hello. Respond in kind.', 'stream reasoning_content', reasoning);
    check(chunks > 5, 'streamed in pieces', chunks);
  }

  // Exact output length, as benchmark recipes ask for it.
  if (!scripted) {
    const n = 24;
    const e = await client.chat.completions.create({
      model, messages, max_tokens: n, min_tokens: n, ignore_eos: true, nvext: { ignore_eos: true },
    });
    check(e.usage.completion_tokens === n, 'ignore_eos gives max_tokens tokens', e.usage);
    check(e.choices[0].finish_reason === 'length', 'finish length', e.choices[0].finish_reason);
  }

  // Completions, not streamed and streamed.
  const k = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 10 });
  check(k.object === 'text_completion' && typeof k.choices[0].text === 'string', 'completion object', k);
  check(k.usage.completion_tokens === 10 && k.choices[0].finish_reason === 'length', 'completion length', k.usage);
  if (scripted) check(k.choices[0].text === ' The quick brown fox jumps over the lazy dog.', 'completion text', k.choices[0].text);
  const ks = await client.completions.create({
    model, prompt: 'Once upon a time', max_tokens: 20, stream: true, stream_options: { include_usage: true },
  });
  let text = '', kusage = null;
  for await (const ch of ks) {
    if (ch.usage) kusage = ch.usage;
    if (ch.choices?.[0]?.text) text += ch.choices[0].text;
  }
  check(kusage && kusage.completion_tokens === 20, 'streamed completion usage', kusage);
  if (scripted) check(text.startsWith(' The quick brown fox jumps over the lazy dog. The quick'), 'streamed completion text', text);

  // A tool call.
  if (scripted) {
    const tools = [{
      type: 'function',
      function: {
        name: 'get_weather', description: 'Current weather',
        parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
      },
    }];
    const t = await client.chat.completions.create({
      model, tools, messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
    });
    const call = t.choices[0].message.tool_calls?.[0];
    check(call && call.type === 'function' && call.function.name === 'get_weather', 'tool call name', t.choices[0].message);
    check(call && JSON.parse(call.function.arguments).location === 'Paris', 'tool call arguments', call);
    check(call && call.id.startsWith('call_'), 'tool call id', call);
    check(t.choices[0].finish_reason === 'tool_calls', 'finish tool_calls', t.choices[0].finish_reason);
    const ts = await client.chat.completions.create({
      model, tools, stream: true, messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
    });
    let name = '', args = '', tfinish = null;
    for await (const ch of ts) {
      const tc = ch.choices[0]?.delta?.tool_calls?.[0];
      if (tc?.function?.name) name += tc.function.name;
      if (tc?.function?.arguments) args += tc.function.arguments;
      if (ch.choices[0]?.finish_reason) tfinish = ch.choices[0].finish_reason;
    }
    check(name === 'get_weather' && JSON.parse(args || '{}').location === 'Paris', 'streamed tool call', { name, args });
    check(tfinish === 'tool_calls', 'streamed finish tool_calls', tfinish);
  }

  // Errors surface as the client's typed errors.
  try {
    await client.chat.completions.create({ model: 'no-such-model', messages });
    check(false, 'unknown model rejected');
  } catch (err) {
    check(err instanceof OpenAI.NotFoundError && err.status === 404, 'unknown model is 404', err.status);
  }
  try {
    await client.chat.completions.create({ model, messages, temperature: 'hot' });
    check(false, 'bad temperature rejected');
  } catch (err) {
    check(err instanceof OpenAI.BadRequestError && err.param === 'temperature', 'bad type is 400 naming the field', err.param);
  }
}

main().then(() => {
  console.log(`openai client: ${passed} passed, ${failed} failed (${mode})`);
  process.exit(failed ? 1 : 0);
}).catch((e) => {
  console.log(`FAIL: ${e.stack || e}`);
  process.exit(1);
});
