FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY authsvc ./authsvc
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --uid 10001 authsvc
USER authsvc
ENV AUTHSVC_HOST=0.0.0.0 AUTHSVC_PORT=8000 AUTHSVC_DATA_DIR=/tmp/authsvc
EXPOSE 8000
CMD ["authsvc", "serve"]
