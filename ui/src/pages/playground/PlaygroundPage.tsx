// Try deployed models: chat (streaming) and embeddings, through the /v1 gateway.

import { Tabs } from "@mantine/core";
import { useWatchList } from "../../api/hooks";
import type { Model } from "../../api/types";
import { Page } from "../../components/Page";
import { Chat } from "./Chat";
import { Embeddings } from "./Embeddings";

export function PlaygroundPage() {
  const models = useWatchList<Model>("/v2/models");
  const names = models.items.filter((m) => (m.replicas ?? 1) > 0).map((m) => m.name);
  return (
    <Page title="Playground">
      <Tabs defaultValue="chat" keepMounted={false}>
        <Tabs.List>
          <Tabs.Tab value="chat">Chat</Tabs.Tab>
          <Tabs.Tab value="embeddings">Embeddings</Tabs.Tab>
        </Tabs.List>
        <Tabs.Panel value="chat" pt="md">
          <Chat models={names} />
        </Tabs.Panel>
        <Tabs.Panel value="embeddings" pt="md">
          <Embeddings models={names} />
        </Tabs.Panel>
      </Tabs>
    </Page>
  );
}
