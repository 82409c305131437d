// Starts a real `squeeze serve` for the browser tests: its own data folder, so its own private
// PostgreSQL cluster (the embedded default), a free port, and the sign-in URL it prints.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";

/// The test's environment without DATABASE_URL: the server must manage its own PostgreSQL.
function serverEnvironment() {
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" };
  delete env.DATABASE_URL;
  return env;
}

export async function startServer() {
  const binary = process.env.SQUEEZE_BIN || new URL("../../target/debug/squeeze", import.meta.url).pathname;
  const dataDir = mkdtempSync(join(process.env.SQUEEZE_BROWSER_TMP || tmpdir(), "squeeze-browser-"));
  const child = spawn(binary, ["serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir, "--workers", "2", "--login-url"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: serverEnvironment(),
  });
  let output = "";
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`squeeze serve did not print its sign-in URL within 120 s:\n${output}`)), 120000);
    const look = (chunk) => {
      output += chunk;
      const base = output.match(/squeeze listening on (http:\/\/\S+)/);
      const login = output.match(/dashboard sign-in[^:]*: (http:\/\/\S+)/);
      if (base && login) {
        clearTimeout(timer);
        resolve({ base: base[1], loginUrl: login[1] });
      }
    };
    child.stdout.on("data", look);
    child.stderr.on("data", look);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`squeeze serve exited with ${code}:\n${output}`));
    });
  });
  const { base, loginUrl } = await ready;
  return {
    base,
    loginUrl,
    dataDir,
    log: () => output,
    async stop() {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15000))]);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/// A safetensors file of F32 tensors with deterministic values, written by hand.
export function safetensors(path, tensors) {
  const header = {};
  const chunks = [];
  let offset = 0;
  let seed = 12345;
  const next = () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed / 2 ** 32 - 0.5) * 0.2;
  };
  for (const [name, shape] of tensors) {
    const count = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(count).map(() => next());
    const bytes = Buffer.from(values.buffer);
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
    chunks.push(bytes);
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += " ";
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([length, Buffer.from(json), ...chunks]));
  return path;
}

export const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
