-- Newcomers whose first purchase was delivered in the last
-- carts.feedback_after_delivery_hours and who have not scored it yet: ask for a 1-10 score.
-- Only the few orders delivered in that window are candidates, so only their
-- customers' purchases are ranked (ties in time: the lowest order id first).
WITH delivered AS (
    SELECT order_id, customer_id, created_at, delivered_at, total_amount
    FROM {{ src('orders') }} orders
    WHERE status IN {{ purchase_statuses }}
      AND delivered_at >= {{ now }} - INTERVAL '{{ (settings.carts.feedback_after_delivery_hours * 60) | round | int }} minutes'
      AND delivered_at < {{ now }}
), ranked AS (
    SELECT order_id,
           ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY created_at, order_id) AS nth
    FROM {{ src('orders') }} orders
    WHERE status IN {{ purchase_statuses }}
      AND customer_id IN (SELECT customer_id FROM delivered)
)
SELECT o.customer_id, o.order_id, o.created_at AS ordered_at, o.delivered_at, o.total_amount
FROM delivered o
JOIN ranked r ON r.order_id = o.order_id AND r.nth = 1
WHERE NOT EXISTS (SELECT 1 FROM {{ src('feedback') }} f WHERE f.order_id = o.order_id)
