// The upload-server peer of `make bench` (benchmarks/peers/tus.py): @tus/server with
// @tus/s3-store, the server Supabase Storage runs, writing to the bench's S3 endpoint.
//
// Configured by the environment the bench gives it: TUS_PORT, TUS_S3_ENDPOINT, TUS_S3_BUCKET,
// TUS_S3_REGION, TUS_PART_SIZE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY. Serves tus 1.0 under
// /files and, outside the tus routes, GET /bench/s3-requests: the S3 requests its store sent so
// far, by command (one per HTTP attempt: counted below the SDK's retry loop). Prints "ready"
// once listening.
import http from "node:http";
import { Server } from "@tus/server";
import { S3Store } from "@tus/s3-store";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const store = new S3Store({
  partSize: Number(env("TUS_PART_SIZE")),
  s3ClientConfig: {
    bucket: env("TUS_S3_BUCKET"),
    region: env("TUS_S3_REGION"),
    endpoint: env("TUS_S3_ENDPOINT"),
    forcePathStyle: true,
    credentials: { accessKeyId: env("AWS_ACCESS_KEY_ID"), secretAccessKey: env("AWS_SECRET_ACCESS_KEY") },
  },
});

const s3Requests = {};
store.client.middlewareStack.add(
  (next, context) => async (args) => {
    s3Requests[context.commandName] = (s3Requests[context.commandName] ?? 0) + 1;
    return next(args);
  },
  { step: "deserialize", name: "depotBenchCountRequests" },
);

const tus = new Server({ path: "/files", datastore: store });

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/bench/s3-requests") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(s3Requests));
    return;
  }
  tus.handle(req, res);
});
server.listen({ host: "127.0.0.1", port: Number(env("TUS_PORT")) }, () => console.log("ready"));

