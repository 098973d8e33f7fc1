-- R, F and M scores 1-5 by quintiles of the customers with a purchase. Ties share a
-- score: a customer's score is 1 + floor(5 * (rank - 1) / n) with rank the SQL RANK()
-- (lowest rank of the tie), so every one-time buyer gets the same F score whatever
-- the row order. R ranks the longest-absent first, F and M the smallest first.
WITH base AS (
    SELECT customer_id,
           {{ as_of }} - last_purchase_day AS recency_days,
           purchase_days AS frequency,
           revenue AS monetary,
           COUNT(*) OVER () AS customers
    FROM {{ mart('customer_facts') }}
    WHERE purchase_days > 0
), ranked AS (
    SELECT *,
           RANK() OVER (ORDER BY recency_days DESC) AS r_rank,
           RANK() OVER (ORDER BY frequency) AS f_rank,
           RANK() OVER (ORDER BY monetary) AS m_rank
    FROM base
), scored AS (
    SELECT customer_id, recency_days, frequency, monetary,
           CAST(1 + floor(CAST(5 * (r_rank - 1) AS DOUBLE PRECISION) / customers) AS INTEGER) AS r_score,
           CAST(1 + floor(CAST(5 * (f_rank - 1) AS DOUBLE PRECISION) / customers) AS INTEGER) AS f_score,
           CAST(1 + floor(CAST(5 * (m_rank - 1) AS DOUBLE PRECISION) / customers) AS INTEGER) AS m_score
    FROM ranked
)
SELECT customer_id,
       CAST(recency_days AS BIGINT) AS recency_days,
       CAST(frequency AS BIGINT) AS frequency,
       monetary,
       r_score, f_score, m_score,
       CAST(r_score AS VARCHAR(1)) || CAST(f_score AS VARCHAR(1)) || CAST(m_score AS VARCHAR(1)) AS rfm_cell,
       CASE
{%- for name, cell in settings.rfm.segments.items() %}
           WHEN r_score BETWEEN {{ cell.r[0] }} AND {{ cell.r[1] }} AND f_score BETWEEN {{ cell.f[0] }} AND {{ cell.f[1] }} THEN {{ lit(name) }}
{%- endfor %}
       END AS rfm_segment
FROM scored
