// The signed-in user, shared by every page.

import { createContext, useContext } from "react";
import type { User } from "./api/types";

export interface Session {
  user: User;
  signOut: () => void;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("useSession outside a signed-in page");
  return session;
}
