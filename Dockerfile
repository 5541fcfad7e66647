# touchstream: one image for the CLI, the workers and (later) the API.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 touchstream
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
COPY datasets /opt/touchstream/datasets
USER touchstream
WORKDIR /home/touchstream
ENTRYPOINT ["touchstream"]
CMD ["--help"]
