// Routes and the signed-in check: no session → the login page; otherwise the shell with its pages.

import { Center, Loader } from "@mantine/core";
import { Suspense, lazy, useCallback, useEffect, useState } from "react";
import { Navigate, Route, Routes, useLocation, useNavigate } from "react-router-dom";
import { getJson, logout, setUnauthorizedHandler } from "./api/client";
import type { User } from "./api/types";
import { Shell } from "./components/Shell";
import { ApiKeysPage } from "./pages/ApiKeys";
import { BackendsPage } from "./pages/backends/BackendsPage";
import { DeploymentsPage } from "./pages/deployments/DeploymentsPage";
import { LoginPage } from "./pages/Login";
import { PlaygroundPage } from "./pages/playground/PlaygroundPage";
import { RoutesPage } from "./pages/Routes";
import { UsersPage } from "./pages/Users";
import { WorkersPage } from "./pages/Workers";
import { SessionContext } from "./session";

// The pages with charts load recharts on demand, keeping it out of the first download.
const DashboardPage = lazy(() => import("./pages/Dashboard").then((m) => ({ default: m.DashboardPage })));
const UsagePage = lazy(() => import("./pages/Usage").then((m) => ({ default: m.UsagePage })));

export function App() {
  const [user, setUser] = useState<User | null | undefined>(undefined);
  const navigate = useNavigate();
  const location = useLocation();

  const loadMe = useCallback(() => {
    getJson<User>("/v2/users/me")
      .then(setUser)
      .catch(() => setUser(null));
  }, []);

  useEffect(() => {
    setUnauthorizedHandler(() => setUser(null));
    loadMe();
  }, [loadMe]);

  const signOut = useCallback(() => {
    void logout().finally(() => {
      setUser(null);
      navigate("/login");
    });
  }, [navigate]);

  if (user === undefined) {
    return (
      <Center h="100vh">
        <Loader aria-label="Loading" />
      </Center>
    );
  }
  if (user === null) {
    if (location.pathname !== "/login") return <Navigate to="/login" replace state={{ from: location.pathname }} />;
    return <LoginPage onLoggedIn={loadMe} />;
  }
  return (
    <SessionContext.Provider value={{ user, signOut }}>
      <Shell>
        <Suspense fallback={<Loader aria-label="Loading page" />}>
          <Routes>
            <Route path="/" element={<Navigate to="/dashboard" replace />} />
            <Route path="/login" element={<Navigate to="/dashboard" replace />} />
            <Route path="/dashboard" element={<DashboardPage />} />
            <Route path="/deployments" element={<DeploymentsPage />} />
            <Route path="/routes" element={<RoutesPage />} />
            <Route path="/backends" element={<BackendsPage />} />
            <Route path="/workers" element={<WorkersPage />} />
            <Route path="/playground" element={<PlaygroundPage />} />
            <Route path="/api-keys" element={<ApiKeysPage />} />
            <Route path="/users" element={<UsersPage />} />
            <Route path="/usage" element={<UsagePage />} />
            <Route path="*" element={<Navigate to="/dashboard" replace />} />
          </Routes>
        </Suspense>
      </Shell>
    </SessionContext.Provider>
  );
}
