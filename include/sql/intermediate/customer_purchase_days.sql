-- Internal: one row per customer and purchase day, with the gap (days) since their
-- previous purchase day; customer_facts (own rhythm) and category_cycles (the
-- shop-wide cycle) both read it.
WITH days AS (
    SELECT customer_id, CAST(created_at AS DATE) AS day, SUM(total_amount) AS amount, COUNT(*) AS orders
    FROM {{ src('orders') }} orders
    WHERE status IN {{ purchase_statuses }}
    GROUP BY customer_id, CAST(created_at AS DATE)
)
SELECT customer_id, day, amount, orders,
       day - LAG(day) OVER (PARTITION BY customer_id ORDER BY day) AS gap,
       ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY day) AS nth
FROM days
