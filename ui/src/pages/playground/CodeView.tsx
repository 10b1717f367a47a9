// The request the playground would send, as curl and as Python (openai client).

import { Code, Modal, Tabs } from "@mantine/core";

export function CodeView({ path, body, onClose }: { path: string; body: object; onClose: () => void }) {
  const origin = window.location.origin;
  const json = JSON.stringify(body, null, 2);
  const curl = `curl ${origin}${path} \\
  -H "Authorization: Bearer $FERROSTACK_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '${json.replace(/'/g, "'\\''")}'`;
  const method = path.endsWith("/embeddings") ? "embeddings.create" : "chat.completions.create";
  const kwargs = Object.entries(body)
    .map(
      ([k, v]) =>
        `    ${k}=${JSON.stringify(v)
          .replace(/\btrue\b/g, "True")
          .replace(/\bfalse\b/g, "False")},`,
    )
    .join("\n");
  const python = `from openai import OpenAI

client = OpenAI(base_url="${origin}/v1", api_key="YOUR_API_KEY")
response = client.${method}(
${kwargs}
)
${method.startsWith("chat") && "stream" in body ? 'for chunk in response:\n    print(chunk.choices[0].delta.content or "", end="")' : "print(response)"}`;
  return (
    <Modal opened onClose={onClose} size="xl" title="View code">
      <Tabs defaultValue="curl">
        <Tabs.List>
          <Tabs.Tab value="curl">curl</Tabs.Tab>
          <Tabs.Tab value="python">Python</Tabs.Tab>
        </Tabs.List>
        <Tabs.Panel value="curl" pt="sm">
          <Code block>{curl}</Code>
        </Tabs.Panel>
        <Tabs.Panel value="python" pt="sm">
          <Code block>{python}</Code>
        </Tabs.Panel>
      </Tabs>
    </Modal>
  );
}
