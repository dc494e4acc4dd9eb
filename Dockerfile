# adlight from the README's install, for `adlight serve` (and training on a CPU):
#   docker build -t adlight .
#   docker run --rm -p 8000:8000 -v $PWD/exported:/model:ro adlight \
#       adlight serve --exported /model --host 0.0.0.0 --port 8000
# docs/serving.md: reverse proxy, scaling out.
FROM python:3.11-slim
WORKDIR /opt/adlight
COPY pyproject.toml README.md ./
COPY adlight ./adlight
COPY configs ./configs
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 \
    && pip install --no-cache-dir -e ".[serve]"
RUN useradd --create-home adlight
USER adlight
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["adlight", "serve", "--help"]
