-- Internal: what each customer bought per category and purchase day (customer_facts
-- ranks their categories, category_cycles measures the gaps between the days).
SELECT o.customer_id, i.category, CAST(o.created_at AS DATE) AS day,
       SUM(COALESCE(i.price, 0) * COALESCE(i.quantity, 1)) AS spent
FROM {{ src('order_items') }} i
JOIN {{ src('orders') }} o ON o.order_id = i.order_id
WHERE o.status IN {{ purchase_statuses }} AND i.category IS NOT NULL
GROUP BY o.customer_id, i.category, CAST(o.created_at AS DATE)
