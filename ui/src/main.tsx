import "@mantine/core/styles.css";
import "@mantine/notifications/styles.css";
import "./index.css";
import { Drawer, MantineProvider, Modal, createTheme } from "@mantine/core";
import { ModalsProvider } from "@mantine/modals";
import { Notifications } from "@mantine/notifications";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { BrowserRouter } from "react-router-dom";
import { App } from "./App";

// Dialogs' close buttons are icon-only: give them a name screen readers can announce.
const closeButton = { closeButtonProps: { "aria-label": "Close" } };
const theme = createTheme({
  primaryColor: "orange",
  defaultRadius: "sm",
  components: {
    Modal: Modal.extend({ defaultProps: closeButton }),
    Drawer: Drawer.extend({ defaultProps: closeButton }),
  },
});

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <MantineProvider theme={theme}>
        <Notifications position="top-right" />
        <ModalsProvider>
          <BrowserRouter>
            <App />
          </BrowserRouter>
        </ModalsProvider>
      </MantineProvider>
    </StrictMode>,
  );
}
