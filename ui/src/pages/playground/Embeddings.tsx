// Embed a few texts and compare them by cosine similarity.

import { Alert, Button, Group, Select, Stack, Table, Text, Textarea } from "@mantine/core";
import { type FormEvent, useState } from "react";
import { messageOf } from "../../api/client";
import { CodeView } from "./CodeView";
import { type EmbeddingResult, embed } from "./openai";

function cosine(a: number[], b: number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  a.forEach((x, i) => {
    const y = b[i] ?? 0;
    dot += x * y;
    na += x * x;
    nb += y * y;
  });
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

export function Embeddings({ models }: { models: string[] }) {
  const [model, setModel] = useState<string | null>(null);
  const [text, setText] = useState("The cat sits on the mat.\nA kitten rests on a rug.\nStock prices fell today.");
  const [result, setResult] = useState<EmbeddingResult | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [showCode, setShowCode] = useState(false);
  const chosen = model ?? models[0] ?? "";
  const inputs = text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      setResult(await embed(chosen, inputs));
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };

  const vectors = result?.data.map((d) => d.embedding) ?? [];
  return (
    <Stack>
      <form onSubmit={submit} aria-label="Embeddings">
        <Stack>
          <Select allowDeselect={false} label="Model" data={models} value={chosen || null} onChange={setModel} />
          <Textarea
            label="Texts (one per line)"
            autosize
            minRows={3}
            value={text}
            onChange={(e) => setText(e.currentTarget.value)}
          />
          <Group>
            <Button type="submit" loading={busy} disabled={!chosen || inputs.length === 0}>
              Embed
            </Button>
            <Button variant="subtle" onClick={() => setShowCode(true)}>
              View code
            </Button>
          </Group>
        </Stack>
      </form>
      {error && (
        <Alert color="red" role="alert" title="Embedding failed">
          {error}
        </Alert>
      )}
      {vectors.length > 0 && (
        <>
          <Text size="sm">
            {vectors.length} vectors of {vectors[0]?.length} dimensions. Cosine similarity:
          </Text>
          <Table aria-label="Similarity">
            <Table.Thead>
              <Table.Tr>
                <Table.Th />
                {inputs.map((_, i) => (
                  <Table.Th key={i}>#{i + 1}</Table.Th>
                ))}
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {vectors.map((a, i) => (
                <Table.Tr key={i}>
                  <Table.Th title={inputs[i]}>#{i + 1}</Table.Th>
                  {vectors.map((b, j) => (
                    <Table.Td key={j}>{cosine(a, b).toFixed(3)}</Table.Td>
                  ))}
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </>
      )}
      {showCode && (
        <CodeView path="/v1/embeddings" body={{ model: chosen, input: inputs }} onClose={() => setShowCode(false)} />
      )}
    </Stack>
  );
}
