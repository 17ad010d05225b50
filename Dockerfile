# The churnstream service image: one image, one command (`churnstream`), every worker.
#   docker build -t churnstream .
#   docker run --rm churnstream --help
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first (a layer that survives code changes), then the code.
COPY pyproject.toml README.md ./
# churnstream/streams, features, models, monitoring are symlinks to the top-level folders copied below.
COPY churnstream ./churnstream
COPY streams ./streams
COPY features ./features
COPY models ./models
COPY monitoring ./monitoring
RUN pip install . \
    # lifetimes ships the real CDNOW order log (`churnstream dataset cdnow`); its own pins are old and
    # only the data file is used, hence --no-deps.
    && pip install --no-deps lifetimes==0.11.3

# An unprivileged user; the directories exist in the image so that named volumes mounted on them
# start out owned by this user.
RUN useradd --create-home --uid 10001 churn \
    && mkdir -p /data/models /data/reports /data/work /data/var \
    && chown -R churn:churn /data
USER churn
WORKDIR /data

ENV CHURN_MODEL_DIR=/data/models \
    CHURN_REPORT_DIR=/data/reports \
    CHURN_VAR_DIR=/data/var

ENTRYPOINT ["churnstream"]
CMD ["--help"]
